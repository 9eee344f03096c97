#!/usr/bin/env python
r"""
Parameters, FLOPs and activations of the models of one or more configs (LTM, LTM-AF, RetinaNet),
at one input size, with Detectron2's analysis tools (FlopCountAnalysis, parameter_count_table,
activation counts; one multiply-add counts as one flop). Nothing is trained or downloaded.

    python tools/analyze_model.py --config-file configs/COCO-Detection/ltm_R_50_FPN_1x.yaml \
        --config-file configs/COCO-Detection/ltm_af_R_50_FPN_1x.yaml \
        --config-file configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml \
        --input-size 800 1333 MODEL.WEIGHTS "" MODEL.DEVICE cpu

--input-size H W is the image fed to the network, before padding to a multiple of the backbone's
stride (default: MIN_SIZE_TEST x MAX_SIZE_TEST, the largest input of the config's test resize).
--details also prints each model's parameter_count_table and its FLOPs by operator.
"""

import argparse
import os

from fvcore.nn import parameter_count_table

from detectron2.modeling import build_model

from ltm_d2 import load_config
from ltm_d2.deploy.model_analysis import model_cost
from ltm_d2.errors import run_main


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        required=True,
        action="append",
        metavar="FILE",
        help="an ltm_d2 config; repeat it to compare models",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="network input (default: MIN_SIZE_TEST MAX_SIZE_TEST of each config)",
    )
    parser.add_argument(
        "--details",
        action="store_true",
        help="also print the parameters by module and the FLOPs by operator",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides, for all configs"
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    rows = []
    for config_file in args.config_file:
        cfg = load_config(config_file, args.opts)
        model = build_model(cfg).eval()  # random weights: the costs do not depend on them
        size = tuple(args.input_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
        cost = model_cost(model, size)
        name = os.path.splitext(os.path.basename(config_file))[0]
        rows.append(
            f"| {name} | {cost.architecture} | {size[0]}x{size[1]} | {cost.parameters / 1e6:.2f} M "
            f"| {cost.flops / 1e9:.2f} G | {cost.activations / 1e6:.1f} M |"
        )
        if args.details:
            print(f"{name}: parameters by module\n{parameter_count_table(model, max_depth=3)}")
            print(
                f"{name}: GFLOPs by operator: "
                + ", ".join(
                    f"{op} {flops / 1e9:.2f}"
                    for op, flops in sorted(cost.flops_by_operator.items())
                )
            )
    print("| config | model | input (HxW) | parameters | FLOPs | activations |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    run_main(main)
