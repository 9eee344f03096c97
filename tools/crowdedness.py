#!/usr/bin/env python
r"""
AP against crowdedness for two detectors on one dataset (paper Table 2 and Fig. 5): prints the
AP of each on the sparse, medium and dense images with the relative improvement of the second,
and writes the AP against the number of objects per image as `crowdedness.png`.

    python tools/crowdedness.py --dataset ltm_shapes_small_val \
        --results output/retinanet/inference/coco_instances_results.json \
                  output/ltm/inference/coco_instances_results.json \
        --names RetinaNet LTM --output output/analysis
"""

import logging
import os

from ltm_d2.analysis.comparison import comparison_argument_parser, start_comparison
from ltm_d2.analysis.crowdedness import (
    ap_on_image_groups,
    crowdedness_table,
    group_images,
    images_by_object_count,
    plot_ap_by_object_count,
)
from ltm_d2.errors import run_main


def main(argv=None):
    parser = comparison_argument_parser(__doc__)
    parser.add_argument(
        "--max-objects",
        type=int,
        default=10,
        help="Fig. 5 groups images of this many objects or more together (default 10)",
    )
    args = parser.parse_args(argv)
    coco_gt, detections, names = start_comparison(args)
    logger = logging.getLogger("ltm_d2")

    groups = group_images(coco_gt)
    aps = [
        ap_on_image_groups(coco_gt, d, groups, f"{n} Table 2 ") for n, d in zip(names, detections)
    ]
    print(f"AP (%) by crowdedness on {args.dataset} (Table 2):")
    print(crowdedness_table(names, aps, {g: len(ids) for g, ids in groups.items()}))

    bins = images_by_object_count(coco_gt, args.max_objects)
    by_count = [
        ap_on_image_groups(coco_gt, d, bins, f"{n} Fig. 5 ") for n, d in zip(names, detections)
    ]
    path = os.path.join(args.output, "crowdedness.png")
    plot_ap_by_object_count(
        path,
        list(bins),
        names,
        [[ap[b] for b in bins] for ap in by_count],
        [len(ids) for ids in bins.values()],
        args.dataset,
    )
    print(
        "AP (%) by objects per image (Fig. 5): "
        + "; ".join(f"{b}: " + " / ".join(f"{ap[b]:.1f}" for ap in by_count) for b in bins)
    )
    logger.info(f"Fig. 5 written to {path}")


if __name__ == "__main__":
    run_main(main)
