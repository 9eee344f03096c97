"""RetinaNet (K anchors): every bag member is a positive of its object; nothing else is."""

import torch

from detectron2.structures import Boxes, Instances, pairwise_iou

from support import build_tiny_model


def test_bag_members_are_positives_of_the_object_of_highest_iou(storage):
    model = build_tiny_model("MODEL.LTM.MATCHING", "topk", "MODEL.LTM.BAG_SIZE", 30)
    features = [torch.zeros(1, 1, 64 // s, 64 // s) for s in (8, 16, 32, 64, 128)]
    anchors = model.anchor_generator(features)
    gt = Instances((64, 64))
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 40.0, 30.0], [14.0, 12.0, 44.0, 34.0]]))
    gt.gt_classes = torch.tensor([2, 4])
    (labels,), (boxes,) = model.label_anchors(anchors, [gt])

    all_anchors = Boxes.cat(anchors)
    iou = pairwise_iou(gt.gt_boxes, all_anchors)
    bags = iou.topk(30, dim=1).indices
    members = set(bags.flatten().tolist())
    assert set((labels != model.num_classes).nonzero().flatten().tolist()) == members
    for j in members:
        holders = [i for i in range(2) if j in bags[i].tolist()]
        best = max(holders, key=lambda i: iou[i, j].item())
        assert labels[j].item() == gt.gt_classes[best].item()
        assert torch.equal(boxes[j], gt.gt_boxes.tensor[best])
    assert len(members) < 60, "the two bags overlap, so some anchors are shared"


def test_an_image_without_objects_is_all_background(storage):
    model = build_tiny_model("MODEL.LTM.MATCHING", "topk")
    features = [torch.zeros(1, 1, 64 // s, 64 // s) for s in (8, 16, 32, 64, 128)]
    gt = Instances((64, 64))
    gt.gt_boxes = Boxes(torch.zeros(0, 4))
    gt.gt_classes = torch.zeros(0, dtype=torch.int64)
    (labels,), _ = model.label_anchors(model.anchor_generator(features), [gt])
    assert (labels == model.num_classes).all()
