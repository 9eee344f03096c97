#!/usr/bin/env python
r"""
Convert the authors' FreeAnchor weights (a maskrcnn-benchmark checkpoint) into a Detectron2
checkpoint for configs/COCO-Detection/freeanchor_R_50_FPN_1x_maskrcnn_benchmark.yaml:

    python tools/convert_freeanchor_to_d2.py free_anchor_R-50-FPN_1x.pth freeanchor_R_50_FPN_1x.pth
    python train_net.py --config-file configs/COCO-Detection/freeanchor_R_50_FPN_1x_maskrcnn_benchmark.yaml \
        --eval-only MODEL.WEIGHTS freeanchor_R_50_FPN_1x.pth

Renames the parameters, reorders the head's rows from their ratio-major anchor order to
Detectron2's size-major one, and drops their anchor buffers (ltm_d2/checkpoint/freeanchor_conversion.py).
"""  # noqa: E501 (the --help text, kept as it is printed)

import argparse
import sys

import torch

from ltm_d2.checkpoint import (
    CheckpointFileError,
    convert_freeanchor_state_dict,
    load_state_dict_file,
)
from ltm_d2.errors import run_main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("input", metavar="IN", help="maskrcnn-benchmark checkpoint (.pth)")
    parser.add_argument("output", metavar="OUT", help="Detectron2 checkpoint to write (.pth)")
    parser.add_argument(
        "--num-aspect-ratios",
        type=int,
        default=3,
        help="aspect ratios per anchor size in their config (default 3: 0.5, 1, 2)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        state_dict = load_state_dict_file(args.input, "a maskrcnn-benchmark FreeAnchor checkpoint")
        converted = convert_freeanchor_state_dict(state_dict, args.num_aspect_ratios)
    except CheckpointFileError as e:
        sys.exit(f"error: {e}")
    except (KeyError, ValueError) as e:
        sys.exit(f"error: {args.input}: {e.args[0]}")
    torch.save(
        {"model": converted, "__author__": "FreeAnchor (maskrcnn-benchmark), converted by ltm_d2"},
        args.output,
    )
    print(f"Wrote {args.output}: {len(converted)} tensors from {args.input}")


if __name__ == "__main__":
    run_main(main)
