"""
COCO box AP of detection result files on a registered dataset, on all of its images or on a
subset, with pycocotools through Detectron2's own helpers. Shared by the crowdedness and the
aspect-ratio analyses.
"""

import contextlib
import glob
import hashlib
import io
import json
import os
import shutil
from typing import List, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco

DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


def load_detections(path: str) -> List[dict]:
    """
    Read a `coco_instances_results.json` (what COCOEvaluator writes): a JSON list of detections,
    each with image_id, category_id, bbox (XYWH) and score. Raises a ValueError naming the file
    and what was expected when it is missing or malformed.
    """
    expected = "the coco_instances_results.json that COCOEvaluator writes"
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file (expected {expected})")
    try:
        with open(path) as f:
            detections = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); expected {expected}") from None
    if not isinstance(detections, list) or not detections:
        raise ValueError(f"{path}: expected a non-empty JSON list of detections ({expected})")
    for detection in detections:
        if not isinstance(detection, dict) or any(k not in detection for k in DETECTION_KEYS):
            raise ValueError(
                f"{path}: every detection needs the keys {', '.join(DETECTION_KEYS)}; "
                f"found {detection!r:.200}"
            )
    return detections


def records_digest(records: List[dict]) -> str:
    """A hash of a dataset's records (their JSON text; arrays as lists)."""

    def plain(value):
        return value.tolist() if hasattr(value, "tolist") else str(value)

    text = json.dumps(records, sort_keys=True, default=plain)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def ground_truth_key(dataset_name: str, records: List[dict]) -> str:
    """Names a conversion of a dataset's ground truth: a hash of its name (a user's dataset is
    named by its path) and of its records, so that edited data is converted again."""
    name_digest = hashlib.sha1(dataset_name.encode()).hexdigest()[:10]
    return f"{name_digest}_{records_digest(records)}"


def remove_earlier_conversions(path: str, key: str) -> None:
    """
    Remove the files and folders beside `path` (a conversion of a dataset's ground truth, whose
    name holds its :func:`ground_truth_key` `key`) that are conversions of earlier versions of the
    same dataset: named like `path` with the same dataset's hash and another records' hash.
    """
    folder, name = os.path.split(path)
    name_digest = key.split("_")[0]
    prefix = os.path.join(folder, name[: name.index(key)] + name_digest + "_")
    for other in glob.glob(glob.escape(prefix) + "*"):
        if not other.startswith(path):
            shutil.rmtree(other) if os.path.isdir(other) else os.remove(other)


def coco_json_file(dataset_name: str, cache_dir: str) -> str:
    """
    A COCO annotation file of a registered dataset: its own `json_file` when it has one, else its
    records converted to COCO format in `cache_dir`, as COCOEvaluator does, under a file name made
    from a hash of the dataset's name (a user's dataset is named by its path) and a hash of its
    records. A dataset whose records changed (an edited CSV file) is thus converted again, never
    read from an earlier conversion, which is removed; unchanged records reuse the file. A
    `json_file` that
    :func:`use_fresh_ground_truth` (evaluation/build.py) set from such a conversion (metadata
    `converted_json_file`) is not the dataset's own: it is converted again too.
    """
    metadata = MetadataCatalog.get(dataset_name)
    json_file = metadata.get("json_file")
    if json_file is None or metadata.get("converted_json_file"):
        key = ground_truth_key(dataset_name, DatasetCatalog.get(dataset_name))
        json_file = os.path.join(cache_dir, f"ground_truth_{key}_coco_format.json")
        if not os.path.exists(json_file):  # written whole (a temporary file moved into place)
            convert_to_coco_json(dataset_name, json_file)
            remove_earlier_conversions(json_file, key)
    return json_file


def coco_ground_truth(dataset_name: str, cache_dir: str) -> COCO:
    """The COCO API object of a registered dataset (the bundled dataset is generated first if
    needed), from :func:`coco_json_file`."""
    DatasetCatalog.get(dataset_name)  # a clear KeyError for an unregistered name
    json_file = coco_json_file(dataset_name, cache_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def check_detections_match(coco_gt: COCO, detections: List[dict], path: str) -> None:
    """Raise a ValueError if `detections` (read from `path`) name images not in `coco_gt`."""
    unknown = {d["image_id"] for d in detections} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} image ids are not in the dataset "
            f"(e.g. {sorted(unknown)[:3]}); "
            "were these results computed on another dataset?"
        )


def evaluate_boxes(
    coco_gt: COCO, detections: List[dict], img_ids: Optional[Sequence[int]] = None
) -> COCOeval:
    """COCO box evaluation of `detections` on the images `img_ids` (default: all), silently."""
    with contextlib.redirect_stdout(io.StringIO()):
        return _evaluate_predictions_on_coco(
            coco_gt, detections, "bbox", cocoeval_fn=COCOeval, img_ids=img_ids
        )


def average_precision(coco_eval: COCOeval) -> float:
    """AP at IoU 0.50:0.95 in percent; NaN when the evaluated images hold no object."""
    ap = float(coco_eval.stats[0])
    return float("nan") if ap < 0 else 100.0 * ap


def per_category_ap(coco_eval: COCOeval) -> np.ndarray:
    """
    (C,) AP in percent of each category, in the order of `coco_eval.params.catIds`, the way
    COCOEvaluator reports AP-<category>: precision at all IoU thresholds and recall levels, all
    areas, at most 100 detections; NaN for a category without ground truth.
    """
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # (IoU, recall, category)
    valid = precision > -1
    total = np.where(valid, precision, 0).sum(axis=(0, 1))
    count = valid.sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * total / count
