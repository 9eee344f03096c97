"""Anchor bags: for each object, the anchors it may be matched to (paper §3.2)."""

from typing import Optional, Tuple

import torch
from torch import Tensor

from detectron2.structures import Boxes, pairwise_iou

from .blocks import row_blocks


def sample_positions(num_objects: int, bag_size: int, bag_sample: int, device) -> Optional[Tensor]:
    """
    (I, S) positions drawn uniformly without replacement from range(K) for each of I bags (paper
    Table 3, "S of K"), or None when `bag_sample` <= 0 or >= K keeps every member.
    """
    if bag_sample <= 0 or bag_sample >= bag_size:
        return None
    return torch.rand(num_objects, bag_size, device=device).argsort(dim=1)[:, :bag_sample]


def sample_bags(bags: Tensor, bag_sample: int) -> Tensor:
    """
    Keep `bag_sample` members of each bag (:func:`sample_positions`).

    Args:
        bags: (I, K) anchor indices.
    Returns:
        (I, min(S, K)) anchor indices.
    """
    keep = sample_positions(*bags.shape, bag_sample, bags.device)
    return bags if keep is None else bags.gather(1, keep)


def anchor_bags(
    anchors: Boxes, gt_boxes: Boxes, bag_size: int, bag_sample: int = 0
) -> Tuple[Tensor, Tensor]:
    """
    Build the bag A_i of every object: the `bag_size` anchors of highest IoU with it, without any
    IoU threshold, optionally subsampled to `bag_sample` anchors. The (I, J) IoU matrix is
    computed a block of objects at a time (:func:`row_blocks`) and never held whole.

    Args:
        anchors: J anchors of one image (all levels concatenated).
        gt_boxes: I ground-truth boxes of the same image.
    Returns:
        bags: (I, K') int64 indices into `anchors`, K' = min(bag_size, J, bag_sample or J).
        iou: (I, K') IoU between each object and the members of its bag.
    """
    k = min(bag_size, len(anchors))
    iou = anchors.tensor.new_empty(len(gt_boxes), k)
    bags = torch.empty(len(gt_boxes), k, dtype=torch.int64, device=anchors.device)
    for rows in row_blocks(len(gt_boxes), len(anchors)):
        torch.topk(pairwise_iou(gt_boxes[rows], anchors), k, dim=1, out=(iou[rows], bags[rows]))
    keep = sample_positions(len(gt_boxes), k, bag_sample, anchors.device)
    if keep is None:
        return bags, iou
    return bags.gather(1, keep), iou.gather(1, keep)


def point_bags(
    points: Boxes, gt_boxes: Boxes, bag_size: int, central_region: float = 0.8, bag_sample: int = 0
) -> Tuple[Tensor, Tensor]:
    """
    Build the point bag of every object (paper §3.3, Fig. 4): the `bag_size` candidate points of
    smallest normalised distance max(|x_i - x_j| / w_i, |y_i - y_j| / h_i) / s_j, where s_j is the
    stride of point j's level; this puts about the same number of points of every level in a bag.
    Candidates are the points inside the central `central_region` of the box, on any level, and
    every point of the finest level, so that objects smaller than a stride keep points.
    `bag_sample` subsamples the bags as in :func:`anchor_bags`.

    Args:
        points: J points of one image, each a box of its level's stride centred on the point
            (Detectron2's FCOS anchors).
        gt_boxes: I ground-truth boxes.
    Returns:
        bags: (I, K') int64 indices into `points`, K' = min(bag_size, number of finest points).
        distance: (I, J) normalised distances, inf for non-candidates.
    """
    centres = points.get_centers()  # (J, 2)
    strides = points.tensor[:, 2] - points.tensor[:, 0]  # (J,)
    gt_centres = gt_boxes.get_centers()  # (I, 2)
    gt_sizes = (gt_boxes.tensor[:, 2:] - gt_boxes.tensor[:, :2]).clamp(min=1e-6)  # (I, 2) w, h
    offsets = (centres[None] - gt_centres[:, None]).abs()  # (I, J, 2)
    distance = (offsets / gt_sizes[:, None]).max(dim=2).values / strides  # (I, J)
    central = (2 * offsets <= central_region * gt_sizes[:, None]).all(dim=2)  # (I, J)
    finest = strides == strides.min()  # (J,)
    distance = distance.masked_fill(~(central | finest), float("inf"))
    k = min(bag_size, int(finest.sum()))
    bags = distance.topk(k, dim=1, largest=False).indices
    return sample_bags(bags, bag_sample), distance
