#!/usr/bin/env python
r"""
Export an LTM, LTM-AF or RetinaNet model, then check the export against the eager model on the
sample image and on three crops of it, whose network inputs have other sizes than the one it was
exported on; prints the differences measured and exits with 1 if any is out of tolerance
(TorchScript and torch.export: bitwise equal; ONNX: boxes within 0.01 px, scores within 1e-4).

    --format torch_export   torch.export of the network up to per-level scores and decoded boxes,
                            dynamic height and width: OUTPUT/model.pt2 (torch.export.save) and
                            OUTPUT/postprocessing.json, the settings of
                            ltm_d2.deploy.postprocess.DensePostprocessing, which makes the
                            detections of its outputs (docs/deploy.md)
    --format onnx           the same network by the dynamo ONNX exporter: OUTPUT/model.onnx and
                            OUTPUT/postprocessing.json
    --format torchscript    --export-method tracing (default) or scripting, with Detectron2's
                            export API: OUTPUT/model.ts (with Detectron2's dump of code and graph)
    --format onnx_legacy    the TorchScript-based ONNX exporter of the traced model, whole
                            inference included: OUTPUT/model.onnx

    python tools/export_model.py --config-file configs/Shapes-Detection/ltm_R_18_FPN_demo.yaml \
        --format torch_export --output exported \
        --sample-image datasets/ltm_shapes/ltm_shapes_small_val/images/000001.jpg \
        MODEL.WEIGHTS output/demo/model_final.pth MODEL.DEVICE cpu

Every exported model takes a (3, H, W) float image already resized as DefaultPredictor resizes
it; the detections are at that size (docs/deploy.md). Detections are matched one to one by class,
box and score; one may stay unmatched only where NMS broke a tie of equal scores the other way
(docs/deploy.md). Where a traced export differs, the check is run again with the eager model
using the traced graph's batched NMS, which may decide IoUs within float32 rounding of the NMS
threshold otherwise (docs/deploy.md); the exit code is that check's. Scripting does not work for
LTM-AF (the tool says why).
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
    check_export,
    export_onnx_dynamo,
    export_onnx_legacy,
    export_program,
    export_scripting,
    export_tracing,
    network_input,
    onnx_dynamo_runner,
    onnx_legacy_runner,
    program_runner,
    scripted_runner,
    traced_runner,
)
from ltm_d2.deploy.postprocess import DensePostprocessing
from ltm_d2.errors import UserError, run_main

# The formats of torch.export's DenseOutputs, and those of Detectron2's export API with the
# --export-method each takes.
DENSE_FORMATS = ("torch_export", "onnx")
EXPORT_METHODS = {"torchscript": ("tracing", "scripting"), "onnx_legacy": ("tracing",)}


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument(
        "--format",
        choices=[*DENSE_FORMATS, *EXPORT_METHODS],
        default="torchscript",
        help="output format (default torchscript; the list above)",
    )
    parser.add_argument(
        "--export-method",
        choices=["tracing", "scripting"],
        default=None,
        help="for --format torchscript: tracing (default) or scripting; onnx_legacy traces",
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
            raise UserError("give --sample-image: the config has no DATASETS.TEST to take one from")
        path = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    image = cv2.imread(path)
    if image is None:
        raise UserError(f"--sample-image {path}: not an image OpenCV can read")
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


def export_method(args):
    """The --export-method of args.format (None for torch.export's formats); UserError where the
    two do not go together."""
    if args.format in DENSE_FORMATS:
        if args.export_method is not None:
            raise UserError(
                f"--format {args.format} is exported by torch.export, which neither traces nor "
                f"scripts: drop --export-method {args.export_method}"
                + (
                    ", or give --format onnx_legacy for the TorchScript-based ONNX exporter of "
                    "the traced model (what --format onnx was before torch.export)"
                    if args.format == "onnx"
                    else ""
                )
            )
        return None
    method = args.export_method or "tracing"
    if method not in EXPORT_METHODS[args.format]:
        methods = " or ".join(EXPORT_METHODS[args.format])
        raise UserError(
            f"--export-method {method} writes --format torchscript only (as Detectron2's); "
            f"--format {args.format} takes --export-method {methods}"
        )
    return method


def export(args, model, sample):
    """Export `model` as asked into args.output; returns the written model's runner and
    tolerance."""
    os.makedirs(args.output, exist_ok=True)
    if args.format in DENSE_FORMATS:
        postprocessing = DensePostprocessing.of(model)
        postprocessing.save(os.path.join(args.output, "postprocessing.json"))
        if args.format == "onnx":
            path = os.path.join(args.output, "model.onnx")
            export_onnx_dynamo(model, sample["image"], path)
            return onnx_dynamo_runner(path, postprocessing), ONNX_TOLERANCE
        path = os.path.join(args.output, "model.pt2")
        torch.export.save(export_program(model, sample["image"]), path)
        return program_runner(torch.export.load(path), postprocessing), EXACT
    if args.export_method == "scripting":
        return scripted_runner(save_torchscript(export_scripting(model), args.output)), EXACT
    adapter, traced = export_tracing(model, sample["image"])
    if args.format == "torchscript":
        return traced_runner(adapter, save_torchscript(traced, args.output)), EXACT
    path = os.path.join(args.output, "model.onnx")
    export_onnx_legacy(adapter, sample["image"], path)
    return onnx_legacy_runner(adapter, path), ONNX_TOLERANCE


def print_differences(title, differences, tolerance, exported_size):
    print(
        f"{title} (tolerance: boxes {tolerance.boxes} px, scores {tolerance.scores}; detections "
        "matched one to one by class, box and score, docs/deploy.md):"
    )
    print(
        f"  {'input':>17}  {'detections':>10}  {'max box diff':>12}  {'max score diff':>14}  "
        f"{'unmatched':>9}  {'ties':>5}  {'eager s':>7}  {'export s':>8}"
    )
    for d in differences:
        size = f"{d.input_size[0]}x{d.input_size[1]}" + (
            " (exported)" if d.input_size == exported_size else ""
        )
        print(
            f"  {size:>17}  {f'{d.eager}/{d.exported}':>10}  {d.boxes:12.3g}  {d.scores:14.3g}  "
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
    args.export_method = export_method(args)
    cfg = load_config(args.config_file, args.opts)
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        SafeCheckpointer(model, cfg=cfg).load(cfg.MODEL.WEIGHTS)
    bgr = sample_image(cfg, args.sample_image)
    sample = network_input(cfg, bgr)
    start = time.perf_counter()
    run, tolerance = export(args, model, sample)
    exported_size = tuple(sample["image"].shape[1:]) if args.export_method != "scripting" else None
    how = args.format if args.export_method is None else f"{args.export_method}, {args.format}"
    print(
        f"Exported {type(model).__name__} ({how}) to {args.output} "
        f"in {time.perf_counter() - start:.1f} s"
        + (f", on a {exported_size[0]}x{exported_size[1]} input" if exported_size else "")
    )
    inputs = [sample] + [network_input(cfg, image) for image in other_sizes(bgr)]
    differences = check_export(model, run, inputs, tolerance)
    print_differences("Against the eager model", differences, tolerance, exported_size)
    if args.export_method == "tracing" and not all(d.within(tolerance) for d in differences):
        # A traced graph's batched NMS may decide IoUs at the threshold otherwise
        # (ltm_d2/deploy/export.py).
        differences = check_export(model, run, inputs, tolerance, nms_as_traced=True)
        print_differences(
            "Against the eager model with the traced graph's batched NMS (class offsets)",
            differences,
            tolerance,
            exported_size,
        )
    failed = [d for d in differences if not d.within(tolerance)]
    print(f"{len(differences) - len(failed)} of {len(differences)} images within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
