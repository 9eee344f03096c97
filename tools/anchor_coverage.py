#!/usr/bin/env python
r"""
How well a config's anchors cover a dataset's objects (no training needed): per category, the
positive anchors RetinaNet's IoU rule gives each object, the share of objects without an anchor of
IoU >= the foreground threshold, and the IoU of the best and of the K-th best anchor (the last
member of an LTM bag of MODEL.LTM.BAG_SIZE).

    python tools/anchor_coverage.py --config-file configs/Shapes-Detection/retinanet_R_18_FPN_demo.yaml \
        --dataset ltm_shapes_small_tune --num-images 300
"""  # noqa: E501 (the --help text, kept as it is printed)

import argparse
import sys

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_anchor_generator

from ltm_d2 import load_config
from ltm_d2.analysis.anchor_coverage import (
    anchor_input_shapes,
    coverage_table,
    dataset_coverage,
    has_anchors,
    input_objects,
    retinanet_matcher,
)
from ltm_d2.errors import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument(
        "--dataset", help="registered dataset (default: the config's first DATASETS.TEST)"
    )
    parser.add_argument(
        "--num-images", type=int, default=0, help="the first N images only (default: all)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    if not has_anchors(cfg):
        sys.exit(
            f"error: {args.config_file}: {cfg.MODEL.META_ARCHITECTURE} has no anchors "
            "to cover objects with"
        )
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    records = DatasetCatalog.get(dataset)
    records = records[: args.num_images] if args.num_images > 0 else records
    bag_size = cfg.MODEL.LTM.BAG_SIZE
    anchor_generator = build_anchor_generator(cfg, anchor_input_shapes(cfg))
    images = input_objects(records, cfg)
    coverage = dataset_coverage(anchor_generator, retinanet_matcher(cfg), images, bag_size)
    fg = cfg.MODEL.RETINANET.IOU_THRESHOLDS[-1]
    print(f"Anchor coverage of {dataset} ({len(records)} images) by {args.config_file}:")
    print(coverage_table(coverage, MetadataCatalog.get(dataset).thing_classes, fg, bag_size))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
