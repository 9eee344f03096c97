#!/usr/bin/env python
r"""
Write the plain Detectron2 RetinaNet config of an LTM (or RetinaNet) config: a config that
Detectron2 alone loads (get_cfg(), merge_from_file(..., allow_unsafe=False)), whose
DefaultPredictor with the LTM checkpoint gives the LTM model's detections (docs/deploy.md).

    python tools/convert_to_retinanet.py --config-file configs/COCO-Detection/ltm_R_50_FPN_1x.yaml \
        --output ltm_R_50_FPN_1x.retinanet.yaml MODEL.WEIGHTS model_final.pth

LTM-AF configs, and configs naming a backbone or anchor generator that ltm_d2 registers, are
refused: a plain Detectron2 cannot build their model.
"""

import argparse
import sys

from ltm_d2 import load_config
from ltm_d2.deploy import NoPlainRetinaNetError, plain_retinanet_yaml
from ltm_d2.errors import run_main


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="an ltm_d2 config")
    parser.add_argument(
        "--output", required=True, metavar="OUT.yaml", help="the plain config to write"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides"
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    try:
        text = plain_retinanet_yaml(cfg, args.config_file)
    except NoPlainRetinaNetError as e:
        sys.exit(f"error: {args.config_file}: {e}")
    if not cfg.MODEL.WEIGHTS:
        print(
            "note: the config has no MODEL.WEIGHTS, so the plain config names no trained weights; "
            "add MODEL.WEIGHTS path/to/model_final.pth to this command"
        )
    if cfg.INPUT.TILING.SIZE > 0:
        print(
            f"note: INPUT.TILING.SIZE {cfg.INPUT.TILING.SIZE} is not carried over: a plain "
            "DefaultPredictor detects on whole images"
        )
    with open(args.output, "w") as f:
        f.write(text)
    print(f"Wrote {args.output}: META_ARCHITECTURE RetinaNet, for Detectron2 without ltm_d2")


if __name__ == "__main__":
    run_main(main)
