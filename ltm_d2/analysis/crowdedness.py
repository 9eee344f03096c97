"""
Object crowdedness (paper §4.2, Table 2 and Fig. 5): an object's crowdedness is its
largest IoU with another object of the same image, an image's the largest over its objects.
Images fall into three groups by crowdedness: sparse [0, 0.2], medium (0.2, 0.5], dense (0.5, 1].
"""

import logging
from collections import OrderedDict
from typing import Dict, List, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pycocotools.coco import COCO
from torch import Tensor

from detectron2.structures import Boxes, BoxMode, pairwise_iou

from ..evaluation.coco_ap import average_precision, evaluate_boxes

logger = logging.getLogger(__name__)

# Upper bounds of the groups of Table 2 (each group's lower bound is the previous upper bound).
CROWDEDNESS_GROUPS = OrderedDict(sparse=0.2, medium=0.5, dense=1.0)


def object_crowdedness(boxes: Boxes) -> Tensor:
    """(G,) the largest IoU of each of an image's G boxes with another of them (0 if alone)."""
    if len(boxes) < 2:
        return torch.zeros(len(boxes))
    iou = pairwise_iou(boxes, boxes)
    iou.fill_diagonal_(0.0)
    return iou.max(dim=1).values


def image_boxes(coco_gt: COCO, img_id: int) -> Boxes:
    """The XYXY boxes of the objects of one image, crowd regions left out."""
    anns = [a for a in coco_gt.imgToAnns[img_id] if not a.get("iscrowd", 0)]
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    return Boxes(BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))


def crowdedness_group(crowdedness: float) -> str:
    """The group of Table 2 an image of this crowdedness belongs to."""
    return next(name for name, upper in CROWDEDNESS_GROUPS.items() if crowdedness <= upper)


def group_images(coco_gt: COCO) -> Dict[str, List[int]]:
    """The image ids of each crowdedness group (an image without objects is sparse)."""
    groups = {name: [] for name in CROWDEDNESS_GROUPS}
    for img_id in sorted(coco_gt.getImgIds()):
        crowdedness = object_crowdedness(image_boxes(coco_gt, img_id))
        groups[crowdedness_group(crowdedness.max().item() if len(crowdedness) else 0.0)].append(
            img_id
        )
    return groups


def images_by_object_count(coco_gt: COCO, max_count: int) -> Dict[str, List[int]]:
    """
    The image ids of each number of objects "1", "2", ..., f"{max_count}+" (every image of
    max_count objects or more). Images without objects and counts without images are left out.
    """
    bins: Dict[int, List[int]] = {}
    for img_id in sorted(coco_gt.getImgIds()):
        count = min(len(image_boxes(coco_gt, img_id)), max_count)
        if count > 0:
            bins.setdefault(count, []).append(img_id)
    return {
        f"{count}+" if count == max_count else str(count): bins[count] for count in sorted(bins)
    }


def ap_on_image_groups(
    coco_gt: COCO, detections: List[dict], groups: Dict, progress: str = ""
) -> Dict:
    """COCO AP (%) of `detections` on each group of image ids; NaN for a group without objects."""
    results = {}
    for k, (name, img_ids) in enumerate(groups.items(), 1):
        logger.info(f"{progress}[{k}/{len(groups)}] AP on {name} ({len(img_ids)} images)")
        results[name] = average_precision(evaluate_boxes(coco_gt, detections, img_ids))
    return results


def relative_improvement(ap_baseline: float, ap_new: float) -> float:
    """(new - baseline) / baseline in percent, as Table 2 reports it; NaN for a baseline of 0."""
    if ap_baseline == 0:
        return float("nan")
    return 100.0 * (ap_new - ap_baseline) / ap_baseline


def crowdedness_table(
    names: Sequence[str], aps: Sequence[Dict[str, float]], sizes: Dict[str, int]
) -> str:
    """Table 2 as Markdown: AP of each model on each group and the relative improvement of the
    second model over the first."""
    groups = list(CROWDEDNESS_GROUPS)
    lines = [
        "| detector | " + " | ".join(f"AP {g} ({sizes[g]} images)" for g in groups) + " |",
        "|---" * (len(groups) + 1) + "|",
    ]
    for name, ap in zip(names, aps):
        lines.append(f"| {name} | " + " | ".join(f"{ap[g]:.1f}" for g in groups) + " |")
    gains = [relative_improvement(aps[0][g], aps[1][g]) for g in groups]
    lines.append("| relative improvement | " + " | ".join(f"{x:+.1f}%" for x in gains) + " |")
    return "\n".join(lines)


def plot_ap_by_object_count(
    path: str,
    counts: Sequence[str],
    names: Sequence[str],
    aps: Sequence[Sequence[float]],
    num_images: Sequence[int],
    dataset_name: str,
) -> None:
    """
    Fig. 5: AP of each model against the number of objects per image, written to `path`.

    Args:
        counts: the labels of the bins of :func:`images_by_object_count`.
        aps: for each model, its AP on each bin; num_images: the images of each bin.
    """
    figure = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    x = np.arange(len(counts))
    for name, ap, marker in zip(names, aps, "os^D"):
        ax.plot(x, ap, marker=marker, label=name)
    ax.set_xticks(x, [f"{count}\n({n})" for count, n in zip(counts, num_images)])
    ax.set_xlabel("objects per image (number of images)")
    ax.set_ylabel("AP (%)")
    ax.set_title(f"AP against the number of objects per image, {dataset_name}")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path)
