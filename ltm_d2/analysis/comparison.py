"""The command line shared by the tools that compare two detection result files on one dataset."""

import argparse
import os
import sys
import tempfile
from typing import List, Tuple

from pycocotools.coco import COCO

from detectron2.utils.logger import setup_logger

from ..data.user_datasets import ensure_registered
from ..evaluation.coco_ap import check_detections_match, coco_ground_truth, load_detections


def comparison_argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="the dataset the results are on: registered, or format:path",
    )
    parser.add_argument(
        "--results",
        nargs=2,
        required=True,
        metavar=("BASELINE.json", "NEW.json"),
        help="two coco_instances_results.json files (COCOEvaluator's output): baseline, then new",
    )
    parser.add_argument(
        "--names",
        nargs=2,
        metavar=("BASELINE", "NEW"),
        help="names of the two models in tables and plots (default: their results' folders)",
    )
    parser.add_argument("--output", required=True, help="folder for the PNG figures")
    return parser


def model_names(args: argparse.Namespace) -> List[str]:
    """
    --names, or the folder above each results file's `inference/` (train_net's OUTPUT_DIR),
    or the files' own names when these folders are the same.
    """
    if args.names:
        return list(args.names)
    names = []
    for path in args.results:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.basename(folder) == "inference":
            folder = os.path.dirname(folder)
        names.append(os.path.basename(folder))
    if names[0] == names[1]:
        names = [os.path.splitext(os.path.basename(path))[0] for path in args.results]
    return names


def load_comparison(args: argparse.Namespace) -> Tuple[COCO, List[List[dict]]]:
    """The dataset's ground truth and the two result files, checked against each other."""
    detections = [load_detections(path) for path in args.results]
    coco_gt = coco_ground_truth(
        ensure_registered(args.dataset), tempfile.mkdtemp(prefix="ltm_d2_coco_")
    )
    for path, dets in zip(args.results, detections):
        check_detections_match(coco_gt, dets, path)
    os.makedirs(args.output, exist_ok=True)
    return coco_gt, detections


def start_comparison(args: argparse.Namespace) -> Tuple[COCO, List[List[dict]], List[str]]:
    """Set up logging, then load what :func:`load_comparison` loads, exiting with a clear message
    on a missing or malformed file or an unknown dataset; returns it with the models' names."""
    setup_logger(name="ltm_d2")
    try:
        coco_gt, detections = load_comparison(args)
    except (ValueError, KeyError) as e:
        sys.exit(f"error: {e}")
    return coco_gt, detections, model_names(args)
