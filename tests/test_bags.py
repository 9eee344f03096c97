"""The anchor bag builder: the K anchors of largest IoU with each object."""

import torch

from detectron2.structures import Boxes, pairwise_iou

from ltm_d2.modeling import blocks
from ltm_d2.modeling.bags import anchor_bags, sample_bags


def grid_anchors(size=64, step=8, sides=(8, 16, 32)):
    centres = torch.arange(step / 2, size, step)
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    boxes = [
        torch.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], -1).reshape(-1, 4)
        for s in sides
    ]
    return Boxes(torch.cat(boxes))


def test_bag_holds_the_k_anchors_of_largest_iou():
    anchors = grid_anchors()
    gt = Boxes(torch.tensor([[3.0, 5.0, 27.0, 19.0], [30.0, 31.0, 60.0, 61.0]]))
    bags, member_iou = anchor_bags(anchors, gt, bag_size=10)
    assert bags.shape == (2, 10)
    iou = pairwise_iou(gt, anchors)
    torch.testing.assert_close(member_iou, iou.gather(1, bags))
    for i in range(2):
        inside = torch.zeros(len(anchors), dtype=torch.bool)
        inside[bags[i]] = True
        assert inside.sum() == 10, "bag members are distinct"
        # Every member has an IoU at least that of every anchor left out (ties may go either way).
        assert iou[i, inside].min() >= iou[i, ~inside].max()


def test_bag_takes_every_anchor_when_there_are_fewer_than_k():
    anchors = grid_anchors(size=16, step=8, sides=(8,))  # 4 anchors
    bags, _ = anchor_bags(anchors, Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]])), bag_size=40)
    assert sorted(bags[0].tolist()) == [0, 1, 2, 3]


def test_bags_of_an_image_without_objects_are_empty():
    bags, iou = anchor_bags(grid_anchors(), Boxes(torch.zeros(0, 4)), bag_size=40)
    assert bags.shape == (0, 40) and iou.shape == (0, 40)


def test_bags_computed_in_blocks_of_objects_equal_those_of_the_whole_iou_matrix(monkeypatch):
    anchors = grid_anchors()
    gt = Boxes(
        torch.tensor([[3.0, 5.0, 27.0, 19.0], [30.0, 31.0, 60.0, 61.0], [0.0, 0.0, 9.0, 40.0]])
    )
    monkeypatch.setattr(blocks, "PAIRS_PER_BLOCK", len(anchors))  # one object per block
    bags, member_iou = anchor_bags(anchors, gt, bag_size=12)
    expected_iou, expected_bags = pairwise_iou(gt, anchors).topk(12, dim=1)
    assert torch.equal(bags, expected_bags) and torch.equal(member_iou, expected_iou)


def test_sampled_bags_keep_the_iou_of_their_members():
    anchors = grid_anchors()
    gt = Boxes(torch.tensor([[3.0, 5.0, 27.0, 19.0], [30.0, 31.0, 60.0, 61.0]]))
    bags, member_iou = anchor_bags(anchors, gt, bag_size=20, bag_sample=6)
    torch.testing.assert_close(member_iou, pairwise_iou(gt, anchors).gather(1, bags))


def test_bag_sample_keeps_s_distinct_members_of_the_k():
    anchors = grid_anchors()
    gt = Boxes(torch.tensor([[3.0, 5.0, 27.0, 19.0], [30.0, 31.0, 60.0, 61.0]]))
    full, _ = anchor_bags(anchors, gt, bag_size=20)
    torch.manual_seed(0)
    sampled, _ = anchor_bags(anchors, gt, bag_size=20, bag_sample=6)
    assert sampled.shape == (2, 6)
    for i in range(2):
        assert len(set(sampled[i].tolist())) == 6
        assert set(sampled[i].tolist()) <= set(full[i].tolist())


def test_bag_sample_draws_different_members_each_time():
    bags = torch.arange(40).repeat(3, 1)
    draws = {tuple(sample_bags(bags, 5)[0].sort().values.tolist()) for _ in range(20)}
    assert len(draws) > 1


def test_bag_sample_of_zero_or_at_least_k_keeps_the_whole_bag():
    bags = torch.arange(40).repeat(3, 1)
    assert torch.equal(sample_bags(bags, 0), bags)
    assert torch.equal(sample_bags(bags, 40), bags)
