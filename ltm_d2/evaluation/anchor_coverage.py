"""
How well a detector's anchors cover a dataset's objects: for each object, how many anchors
RetinaNet's IoU rule makes positive (IoU >= the foreground threshold, or the object's best anchor
when none reaches it), its best anchor IoU, and the IoU of the K-th best anchor, the last member of
its LTM bag (paper §3.2). Few positives per object is where hand-crafted IoU matching starves and
bags of K anchors do not.
"""
from typing import Dict, List, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from detectron2.data.transforms import ResizeShortestEdge
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, BoxMode, pairwise_iou


class ObjectCoverage(NamedTuple):
    """Per object (G,): positive anchors under the IoU rule, best anchor IoU, K-th best anchor IoU."""

    positives: Tensor
    best_iou: Tensor
    kth_iou: Tensor


def image_anchors(model, height: int, width: int) -> Boxes:
    """All anchors of `model` (a Detectron2 dense detector) on an input image of this size."""
    shapes = [model.backbone.output_shape()[f] for f in model.head_in_features]
    features = [torch.zeros(1, 1, -(-height // s.stride), -(-width // s.stride)) for s in shapes]
    return Boxes.cat(model.anchor_generator(features))


def object_coverage(gt_boxes: Boxes, anchors: Boxes, matcher: Matcher, bag_size: int) -> ObjectCoverage:
    """The coverage of G objects by A anchors, RetinaNet's `matcher` and bags of `bag_size`."""
    iou = pairwise_iou(gt_boxes, anchors)  # (G, A)
    matched, labels = matcher(iou)
    positives = torch.bincount(matched[labels == 1], minlength=len(gt_boxes))
    top = iou.topk(min(bag_size, iou.shape[1]), dim=1).values
    return ObjectCoverage(positives, top[:, 0], top[:, -1])


def dataset_coverage(model, records: Sequence[dict], min_size: int, max_size: int, bag_size: int) -> Dict:
    """
    Coverage of the objects of dataset `records` at the test input size (shortest edge `min_size`,
    longest at most `max_size`), crowd regions left out.

    Returns: {"category_id": (N,), "positives", "best_iou", "kth_iou": (N,)} over all N objects.
    """
    matcher = Matcher(model.anchor_matcher.thresholds[1:-1], model.anchor_matcher.labels, True)
    columns: Dict[str, List] = {"category_id": [], "positives": [], "best_iou": [], "kth_iou": []}
    anchors_by_size: Dict = {}
    for record in records:
        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        if not anns:
            continue
        h, w = record["height"], record["width"]
        new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, min_size, max_size)
        if (new_h, new_w) not in anchors_by_size:
            anchors_by_size[(new_h, new_w)] = image_anchors(model, new_h, new_w)
        xyxy = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns])
        xyxy = xyxy.float() * torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h])
        coverage = object_coverage(Boxes(xyxy), anchors_by_size[(new_h, new_w)], matcher, bag_size)
        columns["category_id"] += [a["category_id"] for a in anns]
        for key, value in coverage._asdict().items():
            columns[key] += value.tolist()
    return {key: np.asarray(value) for key, value in columns.items()}


def coverage_table(coverage: Dict, class_names: Sequence[str], fg_threshold: float, bag_size: int) -> str:
    """Markdown: per category and over all objects, mean positives, share of objects without an
    anchor of IoU >= `fg_threshold`, median best IoU and median IoU of the K-th best anchor."""
    lines = [
        f"| category | objects | positives per object | no anchor of IoU >= {fg_threshold} | "
        f"median best IoU | median IoU of anchor K={bag_size} |",
        "|---" * 6 + "|",
    ]
    rows = [(name, coverage["category_id"] == c) for c, name in enumerate(class_names)]
    for name, mask in rows + [("all", np.ones_like(coverage["positives"], dtype=bool))]:
        if not mask.any():
            continue
        lines.append(
            f"| {name} | {mask.sum()} | {coverage['positives'][mask].mean():.2f} | "
            f"{100 * (coverage['best_iou'][mask] < fg_threshold).mean():.0f}% | "
            f"{np.median(coverage['best_iou'][mask]):.2f} | {np.median(coverage['kth_iou'][mask]):.2f} |"
        )
    return "\n".join(lines)
