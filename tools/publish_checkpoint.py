#!/usr/bin/env python
r"""
Make a shareable checkpoint of a training run: the model weights only (no optimizer, scheduler or
iteration), optionally in float16, with the box-regression weights its checkpoint records (for
fine-tuning from it, docs/own_data.md), the run's config (OUTPUT_DIR/config.yaml) and its final
evaluation (the last one in OUTPUT_DIR/metrics.json) embedded, written as
model_final_<first 6 hex digits of its SHA-256>.pth. Prints the model-zoo catalog line to add.

    python tools/publish_checkpoint.py output/demo --name Shapes-Detection/ltm_R_18_FPN_demo.yaml \
        --output published --url-prefix https://example.org/ltm_d2/

The file loads with DetectionCheckpointer and with torch.load(..., weights_only=True). Beside it,
model_final_<hex>.retinanet.yaml is the plain Detectron2 RetinaNet config of an anchor-based model
(tools/convert_to_retinanet.py, docs/deploy.md), with MODEL.WEIGHTS the file's URL (or path): Detectron2
without ltm_d2 runs the model with it. LTM-AF models have none (the tool says why).
"""  # noqa: E501 (the --help text, kept as it is printed)

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Dict, Optional, Tuple, Union

import torch

from ltm_d2 import load_config
from ltm_d2.checkpoint import CheckpointFileError, load_checkpoint_file
from ltm_d2.checkpoint.fine_tuning import RECORD_KEY
from ltm_d2.deploy import NoPlainRetinaNetError, plain_retinanet_yaml
from ltm_d2.errors import run_main
from ltm_d2.model_zoo import sha256_of


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the training run's OUTPUT_DIR")
    parser.add_argument(
        "--weights", help="checkpoint to publish (default: OUTPUT_DIR/model_final.pth)"
    )
    parser.add_argument(
        "--fp16", action="store_true", help="store floating-point weights as float16"
    )
    parser.add_argument("--output", help="folder for the published file (default: OUTPUT_DIR)")
    parser.add_argument(
        "--name",
        required=True,
        help=(
            "the config's model-zoo name, for the catalog line "
            "(e.g. Shapes-Detection/ltm_R_18_FPN_demo.yaml)"
        ),
    )
    parser.add_argument(
        "--url-prefix",
        help="where the file will be served, for the catalog line (default: its file:// URL)",
    )
    return parser.parse_args(argv)


def read_config_text(output_dir: str) -> str:
    """The text of OUTPUT_DIR/config.yaml, checked to load as an ltm_d2 config."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        sys.exit(
            f"error: {path} does not exist (expected the config.yaml that train_net.py writes)"
        )
    try:
        load_config(path)
    except Exception as e:  # any parse or key error: the file is not a config of this project
        sys.exit(f"error: {path} is not a valid ltm_d2 config ({type(e).__name__}: {e})")
    with open(path) as f:
        return f.read()


def read_final_metrics(output_dir: str) -> Dict[str, Union[int, float]]:
    """The last evaluation in OUTPUT_DIR/metrics.json (one JSON object per line): its "bbox/..."
    entries and the iteration, or an empty dict if the run was never evaluated."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        sys.exit(
            f"error: {path} does not exist (expected the metrics.json that train_net.py writes)"
        )
    final = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(
                    f"error: {path} line {number} is not JSON ({e}); "
                    "expected one JSON object per line"
                )
            evaluation = {k: float(v) for k, v in record.items() if k.startswith("bbox/")}
            if evaluation:
                final = {"iteration": int(record["iteration"]), **evaluation}
    return final


def read_weights(path: str, fp16: bool) -> Tuple[Dict[str, torch.Tensor], Optional[Any]]:
    """The model state dict of a Detectron2 checkpoint, optionally with floats as float16, and the
    box-regression weights its head was trained with, as the checkpoint records them (none in a
    checkpoint of an LTM-AF model)."""
    try:
        checkpoint = load_checkpoint_file(path, "the run's checkpoint, e.g. model_final.pth")
    except CheckpointFileError as e:
        sys.exit(f"error: {e}")
    weights = checkpoint["model"]
    if fp16:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    return weights, checkpoint.get(RECORD_KEY)


def publish(
    weights: Dict[str, torch.Tensor],
    bbox_reg_weights: Optional[Any],
    config: str,
    metrics: Dict,
    folder: str,
) -> Tuple[str, str]:
    """Write the shareable file into `folder`, with the box-regression weights recorded by the
    run's checkpoint (if any); returns its path, named after its SHA-256, and the SHA-256."""
    os.makedirs(folder, exist_ok=True)
    checkpoint = {"model": weights, "config": config, "metrics": metrics, "__author__": "ltm_d2"}
    if bbox_reg_weights is not None:
        checkpoint[RECORD_KEY] = bbox_reg_weights
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".pth", delete=False) as f:
        torch.save(checkpoint, f)
    sha256 = sha256_of(f.name)
    path = os.path.join(folder, f"model_final_{sha256[:6]}.pth")
    os.replace(f.name, path)
    os.chmod(path, 0o644)  # the temporary file was private to its owner
    return path, sha256


def write_plain_config(output_dir: str, published: str, weights_location: str) -> str:
    """Write the plain RetinaNet config of the run beside the `published` file, with MODEL.WEIGHTS
    `weights_location`; returns what was done, for the user."""
    cfg = load_config(os.path.join(output_dir, "config.yaml"), ["MODEL.WEIGHTS", weights_location])
    try:
        text = plain_retinanet_yaml(cfg, os.path.join(output_dir, "config.yaml"))
    except NoPlainRetinaNetError as e:
        return f"No plain Detectron2 RetinaNet config: {e}"
    path = os.path.splitext(published)[0] + ".retinanet.yaml"
    with open(path, "w") as f:
        f.write(text)
    return f"Plain Detectron2 RetinaNet config (no ltm_d2 needed): {path}"


def main(argv=None):
    args = parse_args(argv)
    weights, record = read_weights(
        args.weights or os.path.join(args.output_dir, "model_final.pth"), args.fp16
    )
    config = read_config_text(args.output_dir)
    metrics = read_final_metrics(args.output_dir)
    path, sha256 = publish(weights, record, config, metrics, args.output or args.output_dir)
    filename = os.path.basename(path)
    url = args.url_prefix + filename if args.url_prefix else "file://" + os.path.abspath(path)
    print(f"Published {path} ({os.path.getsize(path)} bytes, SHA-256 {sha256})")
    print(
        write_plain_config(
            args.output_dir, path, args.url_prefix + filename if args.url_prefix else path
        )
    )
    if metrics:
        print("Final evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    print("Catalog line for ltm_d2/model_zoo/model_zoo.py (CATALOG):")
    print(f'    "{args.name}": PublishedCheckpoint(\n        "{url}",\n        "{sha256}",\n    ),')


if __name__ == "__main__":
    run_main(main)
