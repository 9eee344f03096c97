#!/usr/bin/env python
r"""
Fit a config's anchors to a dataset (no training): one scale c for the base anchor size of every
level (c x its stride; the levels, octave scales and aspect ratios are the config's), and for LTM
the bag size K; the rules are in ltm_d2/analysis/anchor_fitting.py. Prints the coverage of the
objects before and after, and the overrides to paste (or writes them as a config with --output).

    python tools/fit_anchors.py --config-file configs/Shapes-Detection/ltm_R_18_FPN_demo.yaml \
        --dataset ltm_shapes_small_tune --num-images 300
    python tools/fit_anchors.py --config-file CONFIG --dataset csv:data/train.csv \
        MODEL.RETINANET.NUM_CLASSES 0
"""

import argparse
import sys

import numpy as np
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import META_ARCH_REGISTRY

from ltm_d2 import LTM, load_config
from ltm_d2.analysis.anchor_coverage import anchor_input_shapes, has_anchors, input_objects
from ltm_d2.analysis.anchor_fitting import (
    comparison_table,
    fit_anchors,
    fitted_config,
    override_line,
)
from ltm_d2.data.user_datasets import ensure_registered
from ltm_d2.errors import run_main

PROGRESS_EVERY = 500  # images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument(
        "--dataset",
        help="registered dataset or FORMAT:PATH (default: the config's first DATASETS.TRAIN)",
    )
    parser.add_argument(
        "--num-images", type=int, default=0, help="the first N images only (default: all)"
    )
    parser.add_argument(
        "--output", help="also write a config with _BASE_ the config file and the fitted values"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    if not has_anchors(cfg):
        sys.exit(f"error: {args.config_file}: {cfg.MODEL.META_ARCHITECTURE} has no anchors to fit")
    dataset = ensure_registered(args.dataset or cfg.DATASETS.TRAIN[0], cfg.DATASETS.CLASS_NAMES)
    records = DatasetCatalog.get(dataset)
    records = records[: args.num_images] if args.num_images > 0 else records
    images = input_objects(records, cfg)
    if not images:
        sys.exit(f"error: {dataset}: no objects among its first {len(records)} images")

    def progress(what: str, done: int) -> None:
        if done % PROGRESS_EVERY == 0:
            print(f"  {what}: {done}/{len(images)} images", flush=True)

    sides = torch.cat([image.boxes.area() for image in images]).sqrt().numpy()  # (N,)
    percentiles = (0, 5, 25, 50, 75, 95, 100)
    pieces = f"tiles of {cfg.INPUT.TILING.SIZE} px" if cfg.INPUT.TILING.SIZE > 0 else "images"
    print(
        f"Dataset {dataset}: {len(records)} images, {len(images)} {pieces} with objects, "
        f"{len(sides)} objects"
    )
    values = ", ".join(
        f"p{p} {v:.1f}" for p, v in zip(percentiles, np.percentile(sides, percentiles))
    )
    size = f"{cfg.INPUT.MIN_SIZE_TEST}, max {cfg.INPUT.MAX_SIZE_TEST}"
    print(f"Object size sqrt(w * h) at the input size ({size}), percentiles {values}")
    fit = fit_anchors(cfg, images, progress=progress)
    strides = [s.stride for s in anchor_input_shapes(cfg)]
    fg = cfg.MODEL.RETINANET.IOU_THRESHOLDS[-1]
    print(
        f"\nCandidates, base size c x stride: objects with an anchor of IoU >= {fg}, "
        "positives per object"
    )
    for c, score in zip(fit.scales, fit.candidates):
        print(f"  c = {c:g}: {100 * score.share:.1f}%, {score.positives:.2f}")
    is_ltm = issubclass(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), LTM)
    bag_size = fit.bag_size if is_ltm else None
    print(f"\nFitted c = {fit.scale:g}" + (f", bag size K = {bag_size}" if is_ltm else ""))
    print(
        comparison_table(
            fit, strides, fg, (cfg.MODEL.LTM.BAG_SIZE, fit.bag_size) if is_ltm else None
        )
    )
    print("\nOverrides:")
    print(override_line(fit.after.sizes, bag_size))
    if args.output:
        with open(args.output, "w") as f:
            f.write(fitted_config(args.config_file, args.output, fit.after.sizes, bag_size))
        print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
