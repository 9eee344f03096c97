"""The evaluator of a test dataset, shared by train_net.py's Trainer and the LazyConfig entry."""

from typing import Optional, Tuple

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm

from ..data.shapes import SPLITS, ensure_split
from .coco_ap import coco_json_file
from .dense_objects import DenseObjectEvaluator
from .nms_recall import NMSRecallEvaluator
from .pascal_voc import VOCEvaluator
from .unreadable_images import SkippingCOCOEvaluator


def use_fresh_ground_truth(dataset_name: str, output_folder: str) -> None:
    """
    Point the metadata of a dataset without its own COCO file at a conversion of its current
    records (:func:`coco_json_file`), written by the main process before COCOEvaluator would
    convert it under a name that does not change with the records: ground truth is never stale.
    Set again at each call, as the records may have changed (an edited CSV file).
    """
    metadata = MetadataCatalog.get(dataset_name)
    if not (metadata.get("json_file") is None or metadata.get("converted_json_file")):
        return
    json_file = coco_json_file(dataset_name, output_folder) if comm.is_main_process() else None
    comm.synchronize()
    json_file = json_file or coco_json_file(dataset_name, output_folder)
    if metadata.get("json_file") != json_file:
        metadata.converted_json_file = True
        if metadata.get("json_file") is not None:
            del metadata.json_file  # Metadata refuses to overwrite a value
        metadata.json_file = json_file


def build_evaluator(
    dataset_name: str,
    output_folder: str,
    max_dets_per_image: int = 100,
    nms_recall: bool = False,
    dense_metrics: Optional[Tuple[float, float]] = None,
) -> DatasetEvaluator:
    """
    The evaluator of the dataset's `evaluator_type`, as Detectron2's tools choose it: Pascal VOC
    mAP (VOCEvaluator) for "pascal_voc", COCOEvaluator otherwise (AP over up to
    `max_dets_per_image` detections per image, at least COCO's 100), into `output_folder`; with
    `dense_metrics` (IoU threshold, score threshold), precision, recall, F1, count error and AP50
    as results["dense"] (:class:`DenseObjectEvaluator`); with `nms_recall`, also NR
    (nms_recall.json there). The bundled dataset's splits are generated on first use.
    """
    if dataset_name in SPLITS:
        ensure_split(dataset_name)  # COCOEvaluator reads the annotation file at once
    if MetadataCatalog.get(dataset_name).get("evaluator_type") == "pascal_voc":
        evaluator = VOCEvaluator(dataset_name, output_folder)
    else:
        use_fresh_ground_truth(dataset_name, output_folder)
        evaluator = SkippingCOCOEvaluator(
            dataset_name, output_dir=output_folder, max_dets_per_image=max(100, max_dets_per_image)
        )
    if dense_metrics is not None:
        evaluator = DenseObjectEvaluator(dataset_name, *dense_metrics, ap_evaluator=evaluator)
    if not nms_recall:
        return evaluator
    return DatasetEvaluators(
        [evaluator, NMSRecallEvaluator(dataset_name, output_dir=output_folder)]
    )
