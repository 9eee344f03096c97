"""
How well a detector's anchors cover a dataset's objects: for each object, how many anchors
RetinaNet's IoU rule makes positive (IoU >= the foreground threshold, or the object's best anchor
when none reaches it), its best anchor IoU, and the IoU of the K-th best anchor, the last member of
its LTM bag (paper §3.2). Few positives per object is where hand-crafted IoU matching starves and
bags of K anchors do not.
"""

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detectron2.data.transforms import ResizeShortestEdge
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet, build_backbone
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from ..modeling.ltm_af import LTMAF
from ..tiling.cutting import tile_records


class ObjectCoverage(NamedTuple):
    """Per object: positive anchors under the IoU rule (G,), IoU of its K best anchors (G, K),
    in decreasing order (0 where the image has fewer than K anchors)."""

    positives: Tensor
    top_iou: Tensor

    @property
    def best_iou(self) -> Tensor:
        return self.top_iou[:, 0]

    @property
    def kth_iou(self) -> Tensor:
        return self.top_iou[:, -1]


class ImageObjects(NamedTuple):
    """One image's objects at its input size (height, width): XYXY `boxes` (G, 4) and their
    `category_id` (G,)."""

    height: int
    width: int
    boxes: Boxes
    category_id: Tensor


def has_anchors(cfg) -> bool:
    """Whether the config's detector places the anchors of MODEL.ANCHOR_GENERATOR (RetinaNet and
    LTM do; LTM-AF places points)."""
    meta_arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return issubclass(meta_arch, RetinaNet) and not issubclass(meta_arch, LTMAF)


def anchor_input_shapes(cfg) -> List[ShapeSpec]:
    """The backbone's output shapes of the features the head reads (MODEL.RETINANET.IN_FEATURES)."""
    shapes = build_backbone(cfg).output_shape()
    return [shapes[f] for f in cfg.MODEL.RETINANET.IN_FEATURES]


def retinanet_matcher(cfg) -> Matcher:
    """RetinaNet's IoU rule: positive at IoU >= the last threshold, else the object's best
    anchor."""
    return Matcher(cfg.MODEL.RETINANET.IOU_THRESHOLDS, cfg.MODEL.RETINANET.IOU_LABELS, True)


def image_anchors(anchor_generator, height: int, width: int) -> Boxes:
    """All anchors of a Detectron2 anchor generator on an input image of this size."""
    features = [
        torch.zeros(1, 1, -(-height // s), -(-width // s)) for s in anchor_generator.strides
    ]
    return Boxes.cat(anchor_generator(features))


def object_coverage(
    gt_boxes: Boxes, anchors: Boxes, matcher: Matcher, bag_size: int
) -> ObjectCoverage:
    """The coverage of G objects by A anchors, RetinaNet's `matcher` and bags of `bag_size`."""
    iou = pairwise_iou(gt_boxes, anchors)  # (G, A)
    matched, labels = matcher(iou)
    positives = torch.bincount(matched[labels == 1], minlength=len(gt_boxes))
    top = iou.topk(min(bag_size, iou.shape[1]), dim=1).values  # (G, min(K, A))
    return ObjectCoverage(positives, F.pad(top, (0, bag_size - top.shape[1])))


def input_objects(records: Sequence[dict], cfg) -> List[ImageObjects]:
    """
    The objects of dataset `records` as the network sees them: in the tiles of the images larger
    than INPUT.TILING.SIZE when it is set (:func:`tile_records`), at the test input size (shortest
    edge INPUT.MIN_SIZE_TEST, longest at most INPUT.MAX_SIZE_TEST); crowd regions left out,
    images without objects skipped.
    """
    min_size, max_size, tiling = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.TILING
    if tiling.SIZE > 0:
        records = tile_records(records, tiling.SIZE, tiling.OVERLAP, tiling.MIN_VISIBLE)
    images = []
    for record in records:
        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        if not anns:
            continue
        h, w = record["height"], record["width"]
        new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, min_size, max_size)
        xyxy = torch.tensor(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        )
        xyxy = xyxy.float() * torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h])  # (G, 4)
        categories = torch.tensor([a["category_id"] for a in anns])
        images.append(ImageObjects(new_h, new_w, Boxes(xyxy), categories))
    return images


def dataset_coverage(
    anchor_generator,
    matcher: Matcher,
    images: Sequence[ImageObjects],
    bag_size: int,
    progress: Optional[Callable[[int], None]] = None,
) -> Dict:
    """
    Coverage of the objects of `images` (:func:`input_objects`) by the anchors of
    `anchor_generator`; `progress(n)` is called after each of the n images.

    Returns: {"category_id", "positives", "best_iou", "kth_iou": (N,), "top_iou": (N, K)} over
    all N objects.
    """
    if not images:
        raise ValueError("no objects to cover: every image is without (non-crowd) objects")
    columns: Dict[str, List[Tensor]] = {"category_id": [], "positives": [], "top_iou": []}
    anchors_by_size: Dict = {}
    for done, image in enumerate(images, start=1):
        size = (image.height, image.width)
        if size not in anchors_by_size:
            anchors_by_size[size] = image_anchors(anchor_generator, *size)
        coverage = object_coverage(image.boxes, anchors_by_size[size], matcher, bag_size)
        columns["category_id"].append(image.category_id)
        columns["positives"].append(coverage.positives)
        columns["top_iou"].append(coverage.top_iou)
        if progress is not None:
            progress(done)
    result = {key: torch.cat(value).numpy() for key, value in columns.items()}
    result["best_iou"], result["kth_iou"] = result["top_iou"][:, 0], result["top_iou"][:, -1]
    return result


def coverage_table(
    coverage: Dict, class_names: Sequence[str], fg_threshold: float, bag_size: int
) -> str:
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
            f"{np.median(coverage['best_iou'][mask]):.2f} | "
            f"{np.median(coverage['kth_iou'][mask]):.2f} |"
        )
    return "\n".join(lines)
