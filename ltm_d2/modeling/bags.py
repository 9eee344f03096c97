"""Anchor bags: for each object, the anchors it may be matched to (paper §3.2)."""
from typing import Tuple

import torch
from torch import Tensor

from detectron2.structures import Boxes, pairwise_iou


def sample_bags(bags: Tensor, bag_sample: int) -> Tensor:
    """
    Keep `bag_sample` members of each bag, drawn uniformly without replacement (paper Table 3,
    "S of K"). `bag_sample` <= 0 or >= the bag size keeps every member.

    Args:
        bags: (I, K) anchor indices.
    Returns:
        (I, min(S, K)) anchor indices.
    """
    num_objects, bag_size = bags.shape
    if bag_sample <= 0 or bag_sample >= bag_size:
        return bags
    order = torch.rand(num_objects, bag_size, device=bags.device).argsort(dim=1)
    return bags.gather(1, order[:, :bag_sample])


def anchor_bags(
    anchors: Boxes, gt_boxes: Boxes, bag_size: int, bag_sample: int = 0
) -> Tuple[Tensor, Tensor]:
    """
    Build the bag A_i of every object: the `bag_size` anchors of highest IoU with it, without any
    IoU threshold, optionally subsampled to `bag_sample` anchors.

    Args:
        anchors: J anchors of one image (all levels concatenated).
        gt_boxes: I ground-truth boxes of the same image.
    Returns:
        bags: (I, K') int64 indices into `anchors`, K' = min(bag_size, J, bag_sample or J).
        iou: (I, J) IoU between objects and anchors.
    """
    iou = pairwise_iou(gt_boxes, anchors)  # (I, J)
    k = min(bag_size, len(anchors))
    bags = iou.topk(k, dim=1).indices  # (I, k)
    return sample_bags(bags, bag_sample), iou
