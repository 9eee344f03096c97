#!/usr/bin/env python
r"""
Per-category AP against aspect ratio for two detectors on one dataset (paper Fig. 7 and Fig. 8):
prints each category's mean aspect ratio max(w/h, h/w), its AP under both detectors and the gain,
and the slope of the line fitted to gain against aspect ratio; writes `aspect_ratio_gain.png`
(Fig. 7) and `category_ap.png` (Fig. 8).

    python tools/aspect_ratio.py --dataset ltm_shapes_small_val \
        --results output/retinanet/inference/coco_instances_results.json \
                  output/ltm/inference/coco_instances_results.json \
        --names RetinaNet LTM --output output/analysis
"""

import logging
import os

from ltm_d2.analysis.aspect_ratio import (
    category_aspect_ratios,
    fit_line,
    plot_category_ap,
    plot_gain_against_aspect_ratio,
)
from ltm_d2.analysis.comparison import comparison_argument_parser, start_comparison
from ltm_d2.errors import run_main
from ltm_d2.evaluation.coco_ap import evaluate_boxes, per_category_ap


def main(argv=None):
    args = comparison_argument_parser(__doc__).parse_args(argv)
    coco_gt, detections, names = start_comparison(args)
    logger = logging.getLogger("ltm_d2")

    aps = []
    for k, (name, dets) in enumerate(zip(names, detections), 1):
        logger.info(f"[{k}/2] per-category AP of {name}")
        aps.append(per_category_ap(evaluate_boxes(coco_gt, dets)))
    cat_ids = sorted(coco_gt.getCatIds())
    categories = [coco_gt.cats[c]["name"] for c in cat_ids]
    ratios = category_aspect_ratios(coco_gt, cat_ids)
    gains = aps[1] - aps[0]

    print(f"| category | aspect ratio | AP {names[0]} | AP {names[1]} | gain |")
    print("|---|---|---|---|---|")
    for i in ratios.argsort():
        print(
            f"| {categories[i]} | {ratios[i]:.2f} | {aps[0][i]:.1f} | "
            f"{aps[1][i]:.1f} | {gains[i]:+.1f} |"
        )
    slope, intercept = fit_line(ratios, gains)
    print(f"fitted line: gain = {slope:+.3f} * aspect ratio {intercept:+.3f} (AP points)")

    fig7 = os.path.join(args.output, "aspect_ratio_gain.png")
    fig8 = os.path.join(args.output, "category_ap.png")
    plot_gain_against_aspect_ratio(fig7, ratios, gains, categories, names, args.dataset)
    plot_category_ap(fig8, ratios, aps, categories, names, args.dataset)
    logger.info(f"Fig. 7 written to {fig7}, Fig. 8 to {fig8}")


if __name__ == "__main__":
    run_main(main)
