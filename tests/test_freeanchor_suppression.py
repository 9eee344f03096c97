"""
FreeAnchor's background suppression computes the IoU only for the (object, predicted box) pairs
whose bounds allow an IoU above t1; the result equals, to the bit, the definition from the dense
(I, J) IoU matrix, whatever the boxes: at the threshold exactly, far away, tiny or huge, empty,
NaN, several classes, no object.
"""

import pytest
import torch

from detectron2.structures import Boxes, Instances, pairwise_iou

from ltm_d2.modeling import blocks, matching
from ltm_d2.modeling.matching import freeanchor_suppression


def dense_suppression(pred_boxes, gt, num_classes, t1):
    """S_jc = max_{i: c_i = c} clamp((IoU(pred_j, b_i) - t1) / (t2_i - t1), 0, 1), one object at
    a time, from the whole (I, J) IoU matrix."""
    iou = pairwise_iou(gt.gt_boxes, pred_boxes)  # (I, J)
    expected = pred_boxes.tensor.new_zeros(len(pred_boxes), num_classes)
    for i, c in enumerate(gt.gt_classes.tolist()):
        t2 = iou[i].max().clamp(min=t1 + 1e-12)
        quality = torch.where(iou[i] > t1, (iou[i] - t1) / (t2 - t1), 0.0).clamp(min=0, max=1)
        expected[:, c] = torch.max(expected[:, c], quality)
    return expected


def varied_boxes(g, n, scale=1.0):
    """XYXY boxes of log-uniform size 1e-3 to 1e4 and centres over -2000..3000, times `scale`."""
    size = torch.exp(torch.empty(n, 2).uniform_(-6.9, 9.2, generator=g))
    centre = torch.empty(n, 2).uniform_(-2000, 3000, generator=g)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1) * scale


def jittered(g, boxes, copies, spread):
    """`copies` boxes near each of `boxes`: edges moved by up to `spread` of the box's size."""
    boxes = boxes.repeat(copies, 1)
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + (torch.rand(boxes.shape, generator=g) * 2 - 1) * spread * size


def scene(seed, num_objects, num_classes):
    """Objects and predicted boxes: many near the objects (IoU on both sides of t1), the rest
    anywhere, with boxes at IoU 0.6 exactly, empty, inverted, NaN and huge ones."""
    g = torch.Generator().manual_seed(seed)
    gt_boxes = varied_boxes(g, num_objects)
    gt_boxes[:2] = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    pred = [
        jittered(g, gt_boxes, 30, 0.25),
        jittered(g, gt_boxes, 10, 0.05),
        varied_boxes(g, 400),
        # IoU 60 / 100 = 0.6 exactly in float32 with objects 0 and 1; object 1 also has a better one
        torch.tensor([[0.0, 0.0, 10.0, 6.0], [100.0, 100.0, 110.0, 106.0]]),
        torch.tensor([[100.0, 100.0, 110.0, 109.0]]),
        # empty, inverted, NaN, huge, far away
        torch.tensor([[5.0, 5.0, 5.0, 9.0], [9.0, 9.0, 1.0, 1.0], [float("nan"), 0.0, 10.0, 10.0]]),
        torch.tensor([[-1e7, -1e7, 1e7, 1e7], [1e6, 1e6, 1e6 + 5.0, 1e6 + 5.0]]),
    ]
    pred = torch.cat(pred)
    pred = pred[torch.randperm(len(pred), generator=g)]
    gt = Instances((800, 1216))
    gt.gt_boxes = Boxes(gt_boxes)
    gt.gt_classes = torch.randint(num_classes, (num_objects,), generator=g)
    return Boxes(pred), gt


def to(device, pred, gt, dtype=torch.float32):
    gt = Instances(
        gt.image_size,
        gt_boxes=Boxes(gt.gt_boxes.tensor.to(device, dtype)),
        gt_classes=gt.gt_classes.to(device),
    )
    return Boxes(pred.tensor.to(device, dtype)), gt


@pytest.fixture
def small_blocks(monkeypatch):
    """Groups of 2 blocks of 8 boxes and chunks of 16 pairs: every loop runs many times."""
    monkeypatch.setattr(matching, "SUPPRESSION_BLOCK", 8)
    monkeypatch.setattr(matching, "SUPPRESSION_GROUP", 2)
    monkeypatch.setattr(blocks, "PAIRS_PER_BLOCK", 128)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t1", [0.6, 0.3, 0.9, 0.0])
def test_suppression_equals_the_dense_iou_definition_to_the_bit(device, seed, t1):
    pred, gt = to(device, *scene(seed, num_objects=12, num_classes=3))
    suppression = freeanchor_suppression(pred, gt, num_classes=3, iou_threshold=t1)
    expected = dense_suppression(pred, gt, 3, t1)
    assert suppression.shape == (len(pred), 3)
    assert (suppression > 0).sum() > 20  # many anchors suppressed: the test sees real pairs
    torch.testing.assert_close(suppression, expected, rtol=0, atol=0, equal_nan=True)


def test_suppression_is_the_same_in_small_blocks_and_in_float64(device, small_blocks):
    for dtype in (torch.float32, torch.float64):
        pred, gt = to(device, *scene(3, num_objects=20, num_classes=4), dtype=dtype)
        suppression = freeanchor_suppression(pred, gt, num_classes=4, iou_threshold=0.6)
        expected = dense_suppression(pred, gt, 4, 0.6)
        torch.testing.assert_close(suppression, expected, rtol=0, atol=0, equal_nan=True)


def test_a_best_box_at_exactly_t1_suppresses_nothing(device):
    # Object 0's best IoU is 0.6 exactly (60 / 100 in float32): t2 rounds to t1 in float32, where
    # (0.6 - 0.6) / (t2 - t1) would be 0 / 0. Object 1 has a better box: its box at 0.6 gives 0.
    gt = Instances((800, 1216))
    gt.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]]))
    gt.gt_classes = torch.tensor([0, 1])
    pred = Boxes(
        torch.tensor(
            [
                [0.0, 0.0, 10.0, 6.0],
                [0.0, 0.0, 10.0, 5.0],
                [100.0, 100.0, 110.0, 106.0],
                [100.0, 100.0, 110.0, 109.0],
                [500.0, 500.0, 510.0, 510.0],
            ]
        )
    )
    pred, gt = to(device, pred, gt)
    suppression = freeanchor_suppression(pred, gt, num_classes=2, iou_threshold=0.6)
    expected = dense_suppression(pred, gt, 2, 0.6)
    assert suppression[0, 0] == 0 and torch.isfinite(suppression).all()
    torch.testing.assert_close(suppression, expected, rtol=0, atol=0)


def test_suppression_without_objects_is_zero(device):
    pred, gt = to(device, *scene(0, num_objects=3, num_classes=2))
    suppression = freeanchor_suppression(pred, gt[:0], num_classes=2, iou_threshold=0.6)
    assert suppression.shape == (len(pred), 2)
    assert (suppression == 0).all()


def test_suppression_is_zero_where_a_group_of_blocks_passes_but_none_of_its_blocks(
    device, monkeypatch
):
    monkeypatch.setattr(matching, "SUPPRESSION_BLOCK", 1)
    monkeypatch.setattr(matching, "SUPPRESSION_GROUP", 2)
    gt = Instances((64, 64))
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 20.0, 20.0]]))
    gt.gt_classes = torch.tensor([1])
    # too far left and too small; too large: their group's bounds pass, each box's do not
    pred = Boxes(torch.tensor([[0.0, 0.0, 2.0, 2.0], [15.0, 15.0, 60.0, 60.0]]))
    pred, gt = to(device, pred, gt)
    suppression = freeanchor_suppression(pred, gt, num_classes=2, iou_threshold=0.6)
    assert suppression.shape == (2, 2)
    assert (suppression == 0).all()


def test_block_bounds_keep_every_pair_whose_iou_reaches_the_threshold():
    g = torch.Generator().manual_seed(5)
    gt = varied_boxes(g, 200)
    pred = torch.cat([jittered(g, gt, 20, 0.2), jittered(g, gt, 5, 0.01), varied_boxes(g, 2000)])
    boxes, _, index, bounds = matching._blocks_of_boxes(Boxes(pred), 1, 1)  # one box per block
    iou = pairwise_iou(Boxes(gt), Boxes(boxes))
    for t in (0.1, 0.6, 0.95):
        may = matching._may_reach_iou(matching._iou_limits(gt, t)[:, None], bounds)
        assert (iou >= t).sum() >= 200
        assert may[iou >= t].all()
        assert not may[iou == 0].all()  # and the bounds do prune
