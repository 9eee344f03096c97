"""
The figures by which users of crowded datasets (tree crowns, cells, animals, products) judge a
detector, beside COCO AP or VOC mAP: precision, recall and F1 at one IoU threshold and one score
threshold, the mean absolute error of the count of objects per image, and AP50.

Matching, per image, class-aware and one-to-one: the detections of score >= the score threshold
are taken in decreasing score (equal scores in the detector's output order); each is a true
positive when an object of its class not yet matched overlaps it with IoU >= the IoU threshold,
and then matches the one of highest IoU among those (equal IoUs: the first object of the image's
record); otherwise it is a false positive. Objects left unmatched are false negatives. Crowd
regions (COCO's `iscrowd`) and VOC's `<difficult>` objects are ignored, as COCO and VOC ignore
them: never missed, and a detection left unmatched that overlaps one of its class (IoU >= the
threshold) counts neither as true nor as false positive.

Over the dataset, precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN),
in percent (NaN where the denominator is 0); the count error of an image is |detections counted -
objects| = |FP - FN|, averaged over the images.
"""

import itertools
import logging
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
from torch import Tensor

from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

logger = logging.getLogger(__name__)


def greedy_matching(candidates: Tensor, iou: Tensor) -> Tensor:
    """
    The one-to-one greedy matching of detections, in decreasing score, to objects.

    Args:
        candidates: (D, G) bool, rows in decreasing score: object g may match detection d (same
            class, IoU >= the threshold).
        iou: (D, G) their IoUs, which choose among a detection's candidates.
    Returns:
        (D,) the object each detection matches, -1 for none.

    Taking the detections one by one is sequential; instead, each round settles at once every
    detection that no unsettled detection of higher score competes with (shares a candidate
    object with): none of those can take one of its objects, so it takes its best free one, as in
    the sequential order, and the settled detections share no object. The highest unsettled
    detection always settles, so the rounds end; there are as many as the longest chain of
    competing detections, not as many as detections.
    """
    num_dets = len(candidates)
    match = torch.full((num_dets,), -1, dtype=torch.int64)
    if not candidates.any():
        return match
    unsettled = torch.ones(num_dets, dtype=torch.bool)
    free = torch.ones(candidates.shape[1], dtype=torch.bool)
    higher = torch.ones(num_dets, num_dets, dtype=torch.bool).tril(-1)  # [d, e]: e scores higher
    while unsettled.any():
        open_candidates = (candidates & free[None] & unsettled[:, None]).float()  # (D, G)
        competes = (open_candidates @ open_candidates.T > 0) & higher  # (D, D)
        settles = unsettled & ~(competes & unsettled[None]).any(dim=1)
        takes = settles & open_candidates.bool().any(dim=1)
        best = iou.masked_fill(open_candidates == 0, -1.0).argmax(dim=1)  # first of equal IoUs
        match[takes] = best[takes]
        free[best[takes]] = False
        unsettled &= ~settles
    return match


def image_counts(
    gt_boxes: Boxes,
    gt_classes: Tensor,
    ignored: Tensor,
    detections,
    iou_threshold: float,
    score_threshold: float,
) -> Tensor:
    """
    (3,) TP, FP and FN of one image under the matching of the module's docstring.

    Args:
        gt_boxes, gt_classes, ignored: (G,) the image's objects; `ignored` marks crowd regions and
            difficult objects.
        detections: the detector's Instances of the image (pred_boxes, scores, pred_classes).
    """
    detections = detections.to("cpu")
    kept = detections.scores >= score_threshold
    order = torch.argsort(detections.scores[kept], descending=True, stable=True)
    boxes = detections.pred_boxes[kept][order]
    classes = detections.pred_classes[kept][order]
    iou = pairwise_iou(boxes, gt_boxes)  # (D, G)
    candidates = (iou >= iou_threshold) & (classes[:, None] == gt_classes[None])  # (D, G)
    match = greedy_matching(candidates & ~ignored[None], iou)
    unmatched = match < 0
    on_ignored = (candidates & ignored[None]).any(dim=1)
    tp = int((~unmatched).sum())
    fp = int((unmatched & ~on_ignored).sum())
    fn = int((~ignored).sum()) - tp
    return torch.tensor([tp, fp, fn])


def dense_metrics(counts: Tensor) -> Dict[str, float]:
    """
    The dataset's figures from (N, 3) TP, FP, FN of its N images: precision, recall, F1 (percent)
    and count_MAE (objects per image), then the totals TP, FP, FN.
    """
    tp, fp, fn = counts.sum(dim=0).double()
    return {
        "precision": (100 * tp / (tp + fp)).item(),  # NaN for 0 / 0
        "recall": (100 * tp / (tp + fn)).item(),
        "F1": (100 * 2 * tp / (2 * tp + fp + fn)).item(),
        "count_MAE": (counts[:, 1] - counts[:, 2]).abs().double().mean().item(),
        "TP": int(tp),
        "FP": int(fp),
        "FN": int(fn),
    }


class DenseObjectEvaluator(DatasetEvaluator):
    """
    Precision, recall, F1 and the mean absolute count error of a dataset (module docstring), as
    results["dense"]; with `ap_evaluator` (SkippingCOCOEvaluator or VOCEvaluator), that
    evaluator's results too, and its "bbox/AP50" as results["dense"]["AP50"]: COCO's AP at IoU
    0.5, or VOC's own (area under the curve), not computed a second time. It runs that evaluator
    itself because a Detectron2 evaluator sees no other's results.

    The ground truth comes from the dataset's records. Images given no output (skipped as
    unreadable) are left out: neither their objects nor the image count. Like Detectron2's
    evaluators, each worker processes its share of the images and the main process gathers the
    counts and logs the figures as a table.
    """

    def __init__(
        self,
        dataset_name: str,
        iou_threshold: float = 0.4,
        score_threshold: float = 0.5,
        ap_evaluator: Optional[DatasetEvaluator] = None,
        distributed: bool = True,
    ):
        self._iou_threshold = iou_threshold
        self._score_threshold = score_threshold
        self._ap_evaluator = ap_evaluator
        self._distributed = distributed
        self._ground_truth = {}
        for record in DatasetCatalog.get(dataset_name):
            annotations = record.get("annotations", [])
            boxes = [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations
            ]
            self._ground_truth[record["image_id"]] = (
                Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
                torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64),
                torch.tensor(
                    [bool(a.get("iscrowd", 0) or a.get("difficult", 0)) for a in annotations],
                    dtype=torch.bool,
                ),
            )
        self.reset()

    def reset(self):
        self._counts: List[Tensor] = []
        if self._ap_evaluator is not None:
            self._ap_evaluator.reset()

    def process(self, inputs, outputs):
        if self._ap_evaluator is not None:
            self._ap_evaluator.process(inputs, outputs)
        for input, output in zip(inputs, outputs):
            if "instances" not in output:
                continue  # an image skipped as unreadable
            self._counts.append(
                image_counts(
                    *self._ground_truth[input["image_id"]],
                    output["instances"],
                    self._iou_threshold,
                    self._score_threshold,
                )
            )

    def evaluate(self):
        results = OrderedDict()
        if self._ap_evaluator is not None:
            results.update(self._ap_evaluator.evaluate() or {})
        counts = self._counts
        if self._distributed:
            comm.synchronize()
            counts = list(itertools.chain(*comm.gather(counts, dst=0)))
            if not comm.is_main_process():
                return {}
        if not counts:
            logger.warning("DenseObjectEvaluator: no image was processed.")
            return results
        dense = dense_metrics(torch.stack(counts))
        if "AP50" in results.get("bbox", {}):
            dense["AP50"] = results["bbox"]["AP50"]
        logger.info(
            f"Dense-object metrics of {len(counts)} images, detections of score >= "
            f"{self._score_threshold:g} matched at IoU >= {self._iou_threshold:g} "
            "(precision, recall, F1, AP50 in %; count_MAE in objects per image):\n"
            + create_small_table(dense)
        )
        results["dense"] = dense
        return results
