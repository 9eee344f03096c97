#!/usr/bin/env python
r"""
How matching evolves during training (paper Fig. 6): for chosen objects of one image, the
anchors (LTM) or points (LTM-AF) of their bags coloured by the weight the positive mean-max
function gives them, one panel per checkpoint of a training run, and the accumulated heat map.

    python tools/matching_confidence.py --config-file configs/Shapes-Detection/ltm_R_18_FPN_demo.yaml \
        --checkpoints output/demo/model_0000249.pth output/demo/model_0000499.pth \
                      output/demo/model_final.pth \
        --image-index 3 --objects 0 1 --output output/matching_confidence.png

Prints, for each checkpoint and object, the largest weight in the bag and the effective number
of matched anchors 1 / sum(w^2) (K while the weights are uniform, 1 once one anchor has them all).
"""  # noqa: E501 (the --help text, kept as it is printed)

import argparse
import logging
import os
import sys

import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from ltm_d2 import load_config
from ltm_d2.analysis.matching_confidence import (
    annotated_input,
    bag_confidence,
    plot_matching_confidence,
)
from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.data.user_datasets import ensure_registered
from ltm_d2.errors import run_main


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", required=True, help="the config of the training run (LTM or LTM-AF)"
    )
    parser.add_argument(
        "--checkpoints", nargs="+", required=True, help="checkpoints of that run, in order"
    )
    parser.add_argument(
        "--dataset", help="registered dataset (default: the config's first test set)"
    )
    parser.add_argument(
        "--image-index", type=int, default=0, help="which image of the dataset (default 0)"
    )
    parser.add_argument(
        "--objects",
        type=int,
        nargs="+",
        help="indices of the chosen objects among the image's annotations (default: all)",
    )
    parser.add_argument(
        "--sigma", type=float, default=3.0, help="smoothing of the heat map, in pixels"
    )
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides"
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="ltm_d2")
    logger = logging.getLogger("ltm_d2")
    for path in [args.config_file, *args.checkpoints]:
        if not os.path.isfile(path):
            sys.exit(f"error: {path} does not exist")
    cfg = load_config(args.config_file, [*args.opts, "MODEL.LTM.BAG_SAMPLE", 0])
    cfg.freeze()
    records = DatasetCatalog.get(
        ensure_registered(args.dataset or cfg.DATASETS.TEST[0], cfg.DATASETS.CLASS_NAMES)
    )
    if not 0 <= args.image_index < len(records):
        sys.exit(f"error: --image-index {args.image_index}: the dataset has {len(records)} images")
    batched_input = annotated_input(cfg, records[args.image_index])
    num_objects = len(batched_input["instances"])
    objects = args.objects if args.objects is not None else list(range(num_objects))
    if not objects or not all(0 <= i < num_objects for i in objects):
        sys.exit(f"error: --objects {objects}: the image has {num_objects} objects")

    model = build_model(cfg)
    model.eval()
    titles, confidences = [], []
    for k, path in enumerate(args.checkpoints, 1):
        try:
            extra = SafeCheckpointer(model, cfg=cfg).load(path)
        except Exception as e:  # torch.load and pickle raise many kinds
            sys.exit(f"error: {path}: not a checkpoint of this model ({type(e).__name__}: {e})")
        confidence = bag_confidence(model, batched_input, objects)
        iteration = extra.get("iteration")
        titles.append(
            f"iteration {iteration + 1}" if iteration is not None else os.path.basename(path)
        )
        confidences.append(confidence)
        w = confidence.weights
        summary = ", ".join(
            f"object {i}: max weight {m:.3f}, effective anchors {n:.1f}"
            for i, m, n in zip(
                objects, w.max(dim=1).values.tolist(), (1 / w.pow(2).sum(dim=1)).tolist()
            )
        )
        logger.info(f"[{k}/{len(args.checkpoints)}] {titles[-1]} ({path}): {summary}")

    image = batched_input["image"].permute(1, 2, 0).numpy()
    rgb = image[:, :, ::-1] if cfg.INPUT.FORMAT == "BGR" else image
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot_matching_confidence(args.output, rgb, titles, confidences, args.sigma)
    logger.info(f"Figure written to {args.output}")


if __name__ == "__main__":
    with torch.no_grad():
        run_main(main)
