#!/usr/bin/env python
r"""
Export an LTM, LTM-AF or RetinaNet model to TorchScript or ONNX with Detectron2's export API
(the flags of Detectron2's tools/deploy/export_model.py), then check the export against the eager
model on the sample image and on three crops of it, whose network inputs have other sizes than the
traced one; prints the differences measured and exits with 1 if any is out of tolerance
(TorchScript: bitwise equal; ONNX: boxes within 0.01 px, scores within 1e-4). Detections are
matched one to one by class, box and score; one may stay unmatched only where NMS broke a tie of
equal scores the other way (docs/deploy.md). Where
a traced export differs, the check is run again with the eager model using the traced graph's
batched NMS, which may decide IoUs within float32 rounding of the NMS threshold otherwise
(docs/deploy.md); the exit code is that check's.

    python tools/export_model.py --config-file configs/Shapes-Detection/ltm_R_18_FPN_demo.yaml \
        --export-method tracing --format onnx --output exported \
        --sample-image datasets/ltm_shapes/ltm_shapes_small_val/images/000001.jpg \
        MODEL.WEIGHTS output/demo/model_final.pth MODEL.DEVICE cpu

Writes OUTPUT/model.ts (with Detectron2's dump of its code and graph) or OUTPUT/model.onnx. The
exported model takes a (3, H, W) float image already resized as DefaultPredictor resizes it and
returns the detections at that size (docs/deploy.md). Scripting writes TorchScript only, and
does not work for LTM-AF (the tool says why).
"""

import argparse
import os
import sys
import time
import warnings

import cv2
import torch

from detectron2.data import DatasetCatalog
from detectron2.export import dump_torchscript_IR
from detectron2.modeling import build_model

from ltm_d2 import load_config
from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.deploy.export import (
    EXACT,
    ONNX_TOLERANCE,
    ExportError,
    check_export,
    export_onnx,
    export_scripting,
    export_tracing,
    network_input,
    onnx_runner,
    scripted_runner,
    traced_runner,
)
from ltm_d2.errors import run_main


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument(
        "--export-method",
        choices=["tracing", "scripting"],
        default="tracing",
        help="method to export models (default tracing)",
    )
    parser.add_argument(
        "--format",
        choices=["torchscript", "onnx"],
        default="torchscript",
        help="output format (default torchscript)",
    )
    parser.add_argument("--output", required=True, help="output directory for the exported model")
    parser.add_argument(
        "--sample-image",
        default=None,
        help="image to trace on and check with (default: the first of DATASETS.TEST[0])",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides"
    )
    return parser


def sample_image(cfg, path):
    """The BGR sample image: `path`, or the first image of the config's first test dataset."""
    if path is None:
        if not cfg.DATASETS.TEST:
            sys.exit("error: give --sample-image (the config has no DATASETS.TEST)")
        path = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    image = cv2.imread(path)
    if image is None:
        sys.exit(f"error: {path}: not an image OpenCV can read")
    return image


def other_sizes(bgr):
    """The left 3/4, the top 2/3 and the left half of an image: three other aspect ratios, so
    other network input sizes."""
    height, width = bgr.shape[:2]
    return [
        bgr[:, : max(1, width * 3 // 4)],
        bgr[: max(1, height * 2 // 3)],
        bgr[:, : max(1, width // 2)],
    ]


def save_torchscript(module, folder):
    """Write folder/model.ts and Detectron2's dump of its code and graph; returns the model read
    back from the file."""
    path = os.path.join(folder, "model.ts")
    module.save(path)
    dump_torchscript_IR(module, folder)
    return torch.jit.load(path)


def export(args, model, sample):
    """Export `model` as asked into args.output; returns the written model's runner and
    tolerance."""
    os.makedirs(args.output, exist_ok=True)
    if args.export_method == "scripting":
        return scripted_runner(save_torchscript(export_scripting(model), args.output)), EXACT
    adapter, traced = export_tracing(model, sample["image"])
    if args.format == "torchscript":
        return traced_runner(adapter, save_torchscript(traced, args.output)), EXACT
    path = os.path.join(args.output, "model.onnx")
    export_onnx(adapter, sample["image"], path)
    return onnx_runner(adapter, path), ONNX_TOLERANCE


def print_differences(title, differences, tolerance, traced_size):
    print(
        f"{title} (tolerance: boxes {tolerance.boxes} px, scores {tolerance.scores}; detections "
        "matched one to one by class, box and score, docs/deploy.md):"
    )
    print(
        f"  {'input':>15}  {'detections':>10}  {'max box diff':>12}  {'max score diff':>14}  "
        f"{'unmatched':>9}  {'ties':>5}  {'eager s':>7}  {'export s':>8}"
    )
    for d in differences:
        size = f"{d.input_size[0]}x{d.input_size[1]}" + (
            " (traced)" if d.input_size == traced_size else ""
        )
        print(
            f"  {size:>15}  {f'{d.eager}/{d.exported}':>10}  {d.boxes:12.3g}  {d.scores:14.3g}  "
            f"{f'{d.unmatched_eager}/{d.unmatched_exported}':>9}  "
            f"{f'{d.tied_eager}/{d.tied_exported}':>5}  {d.eager_seconds:7.3f}  "
            f"{d.exported_seconds:8.3f}"
        )
    print(
        "  (eager/exported; ties: detections without a counterpart because NMS kept the other "
        "of two overlapping equal scores; unmatched: the others without one)"
    )


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    # Tracing warns at every Python bool and int taken from a tensor (Detectron2's asserts, and
    # the image sizes that the check on other sizes shows to stay dynamic).
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    if args.export_method == "scripting" and args.format != "torchscript":
        sys.exit(
            "error: --export-method scripting writes --format torchscript only (as Detectron2's)"
        )
    cfg = load_config(args.config_file, args.opts)
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        SafeCheckpointer(model, cfg=cfg).load(cfg.MODEL.WEIGHTS)
    bgr = sample_image(cfg, args.sample_image)
    sample = network_input(cfg, bgr)
    start = time.perf_counter()
    try:
        run, tolerance = export(args, model, sample)
    except ExportError as e:
        sys.exit(f"error: {e}")
    traced_size = tuple(sample["image"].shape[1:]) if args.export_method == "tracing" else None
    print(
        f"Exported {type(model).__name__} ({args.export_method}, {args.format}) to {args.output} "
        f"in {time.perf_counter() - start:.1f} s"
        + (f", traced on a {traced_size[0]}x{traced_size[1]} input" if traced_size else "")
    )
    inputs = [sample] + [network_input(cfg, image) for image in other_sizes(bgr)]
    differences = check_export(model, run, inputs, tolerance)
    print_differences("Against the eager model", differences, tolerance, traced_size)
    if traced_size and not all(d.within(tolerance) for d in differences):
        # A traced graph's batched NMS may decide IoUs at the threshold otherwise
        # (ltm_d2/deploy/export.py).
        differences = check_export(model, run, inputs, tolerance, nms_as_traced=True)
        print_differences(
            "Against the eager model with the traced graph's batched NMS (class offsets)",
            differences,
            tolerance,
            traced_size,
        )
    failed = [d for d in differences if not d.within(tolerance)]
    print(f"{len(differences) - len(failed)} of {len(differences)} images within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
