#!/usr/bin/env python
r"""
Draw a trained model's detections beside the ground truth on images of a registered dataset,
with Detectron2's Visualizer; one JPEG per image.

    python tools/draw_detections.py --config-file configs/Shapes-Detection/ltm_R_18_FPN_demo.yaml \
        --weights output/demo/model_final.pth --output output/demo/pictures
"""

import argparse
import os
import sys

import cv2

from detectron2.data import DatasetCatalog, MetadataCatalog

from ltm_d2 import load_config
from ltm_d2.data.user_datasets import ensure_registered
from ltm_d2.errors import run_main
from ltm_d2.visualization import (
    confident_detections,
    draw_detections,
    draw_ground_truth,
    safe_predictor,
    side_by_side,
    write_rgb,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", required=True, help="the config the model was trained with"
    )
    parser.add_argument("--weights", required=True, help="checkpoint to load (.pth)")
    parser.add_argument("--output", required=True, help="folder for the pictures")
    parser.add_argument(
        "--dataset", help="registered dataset (default: the config's first test set)"
    )
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="trailing KEY VALUE config overrides"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(args.weights):
        sys.exit(
            f"error: checkpoint {args.weights} does not exist (train first, or pass --weights)"
        )
    cfg = load_config(args.config_file, [*args.opts, "MODEL.WEIGHTS", args.weights])
    cfg.freeze()
    dataset = ensure_registered(args.dataset or cfg.DATASETS.TEST[0], cfg.DATASETS.CLASS_NAMES)
    metadata = MetadataCatalog.get(dataset)
    predictor = safe_predictor(cfg)
    os.makedirs(args.output, exist_ok=True)
    records = DatasetCatalog.get(dataset)[: args.num_images]
    for k, record in enumerate(records, 1):
        image = cv2.imread(record["file_name"])
        instances = confident_detections(predictor, image, args.confidence_threshold)
        rgb = image[:, :, ::-1]
        truth = draw_ground_truth(rgb, record, metadata)
        found = draw_detections(rgb, instances, metadata)
        path = os.path.join(args.output, os.path.basename(record["file_name"]))
        write_rgb(path, side_by_side([truth, found]))
        print(
            f"[{k}/{len(records)}] {path}: {len(instances)} detections "
            "(left: ground truth, right: detections)"
        )
    print(f"Pictures written to {os.path.abspath(args.output)}")


if __name__ == "__main__":
    run_main(main)
