"""
The background term and FreeAnchor's suppression computed a block at a time equal the same
computed whole, value and gradient, when the blocks cut through the input.
"""

import pytest
import torch

from detectron2.structures import Boxes, Instances, pairwise_iou

from ltm_d2.modeling import blocks
from ltm_d2.modeling.matching import (
    background_focal_loss,
    background_focal_loss_sum,
    freeanchor_suppression,
)

from support import random_boxes


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(blocks, "PAIRS_PER_BLOCK", 35)  # 5 rows of 7 classes per block


def test_row_blocks_cover_every_row_once(small_blocks):
    covered = [r for rows in blocks.row_blocks(23, 7) for r in range(23)[rows]]
    assert covered == list(range(23))
    assert all(rows.stop - rows.start <= 5 for rows in blocks.row_blocks(23, 7))


@pytest.mark.parametrize("with_suppression", [False, True])
def test_blockwise_background_equals_the_whole_sum_and_its_gradient(small_blocks, with_suppression):
    g = torch.Generator().manual_seed(0)
    logits = (torch.rand(23, 7, generator=g, dtype=torch.float64) * 100 - 50).requires_grad_(True)
    suppression = torch.rand(23, 7, generator=g, dtype=torch.float64) if with_suppression else None
    # pairs on both sides of block boundaries (rows 4|5 and 9|10), the first and the last
    excluded = torch.tensor([0, 34, 35, 36, 69, 70, 100, 160])
    keep = torch.ones(23 * 7, dtype=torch.bool)
    keep[excluded] = False

    total = background_focal_loss_sum(logits, 2.0, suppression, excluded)
    (grad,) = torch.autograd.grad(3.0 * total, logits)
    expected = background_focal_loss(logits, 2.0, suppression).flatten()[keep].sum()
    (expected_grad,) = torch.autograd.grad(3.0 * expected, logits)

    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-300)
    assert (grad.flatten()[excluded] == 0).all()


def test_blockwise_suppression_equals_the_whole_iou_matrix(monkeypatch):
    size = (64, 96)
    pred = Boxes(random_boxes(50, size, seed=1))
    gt = Instances(size)
    gt.gt_boxes = Boxes(torch.cat([pred.tensor[:3] + 1.0, random_boxes(4, size, seed=2)]))
    gt.gt_classes = torch.tensor([0, 2, 0, 1, 2, 2, 4])
    monkeypatch.setattr(blocks, "PAIRS_PER_BLOCK", 2 * len(pred))  # two objects per block

    iou = pairwise_iou(gt.gt_boxes, pred)  # (I, J), as the freeanchor background term
    t2 = iou.max(dim=1, keepdim=True).values.clamp(min=0.6 + 1e-12)
    quality = ((iou - 0.6) / (t2 - 0.6)).clamp(0, 1)
    expected = torch.zeros(len(pred), 5)
    for i, c in enumerate(gt.gt_classes.tolist()):
        expected[:, c] = torch.max(expected[:, c], quality[i])

    suppression = freeanchor_suppression(pred, gt, num_classes=5, iou_threshold=0.6)
    assert suppression.max() == 1.0
    torch.testing.assert_close(suppression, expected, rtol=0, atol=0)
