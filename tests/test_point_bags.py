"""LTM-AF point bags: normalised distance, central-80% rule, finest-level exemption (paper §3.3)."""

import torch

from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.structures import Boxes

from ltm_d2.modeling.bags import point_bags

STRIDES = [8, 16, 32, 64, 128]


def points(size=512):
    generator = DefaultAnchorGenerator(
        sizes=[[s] for s in STRIDES], aspect_ratios=[1.0], strides=STRIDES
    )
    features = [torch.zeros(1, 1, max(1, size // s), max(1, size // s)) for s in STRIDES]
    return Boxes.cat(generator(features))


def level_of(pts, index):
    return (pts.tensor[index, 2] - pts.tensor[index, 0]).long()


def test_a_large_object_gets_about_the_same_number_of_points_from_each_level():
    pts = points()
    gt = Boxes(torch.tensor([[40.0, 60.0, 460.0, 420.0]]))
    bags, _ = point_bags(pts, gt, bag_size=40)
    counts = [(level_of(pts, bags[0]) == s).sum().item() for s in STRIDES]
    assert sum(counts) == 40
    assert all(c >= 4 for c in counts[:4]), counts  # P7 has only a handful of points inside
    assert max(counts) <= 3 * min(counts[:4]), counts


def test_a_tiny_object_gets_finest_level_points():
    pts = points()
    gt = Boxes(torch.tensor([[101.0, 203.0, 104.0, 205.0]]))  # smaller than the finest stride
    bags, _ = point_bags(pts, gt, bag_size=40)
    assert bags.shape == (1, 40)
    assert (level_of(pts, bags[0]) == 8).all()


def test_points_outside_the_central_region_are_excluded_except_on_the_finest_level():
    pts = points()
    gt_tensor = torch.tensor([[100.0, 100.0, 300.0, 180.0], [20.0, 300.0, 60.0, 500.0]])
    bags, distance = point_bags(pts, Boxes(gt_tensor), bag_size=40)
    centres = pts.get_centers()
    for i, (x0, y0, x1, y1) in enumerate(gt_tensor.tolist()):
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        for j in bags[i].tolist():
            central = (
                2 * abs(centres[j, 0] - cx) <= 0.8 * w and 2 * abs(centres[j, 1] - cy) <= 0.8 * h
            )
            assert central or level_of(pts, j) == 8


def test_bag_holds_the_candidates_of_smallest_normalised_distance():
    pts = points(256)
    gt_tensor = torch.tensor([[30.0, 40.0, 150.0, 90.0]])
    bags, distance = point_bags(pts, Boxes(gt_tensor), bag_size=40)
    centres = pts.get_centers()
    x0, y0, x1, y1 = gt_tensor[0].tolist()
    expected = []
    for j in range(len(pts)):
        stride = level_of(pts, j).item()
        dx, dy = (
            abs(centres[j, 0].item() - (x0 + x1) / 2),
            abs(centres[j, 1].item() - (y0 + y1) / 2),
        )
        candidate = (2 * dx <= 0.8 * (x1 - x0) and 2 * dy <= 0.8 * (y1 - y0)) or stride == 8
        expected.append(max(dx / (x1 - x0), dy / (y1 - y0)) / stride if candidate else float("inf"))
    expected = torch.tensor(expected)
    inside = torch.zeros(len(pts), dtype=torch.bool)
    inside[bags[0]] = True
    assert inside.sum() == 40
    assert expected[inside].max() <= expected[~inside].min() + 1e-6  # ties may go either way


def test_every_object_gets_a_bag_of_at_most_k_even_in_a_tiny_image():
    pts = points(64)  # 64 finest points
    gt = Boxes(
        torch.tensor([[0.0, 0.0, 64.0, 64.0], [60.0, 60.0, 64.0, 64.0], [-10.0, 10.0, 5.0, 90.0]])
    )
    bags, distance = point_bags(pts, gt, bag_size=100)
    assert bags.shape == (3, 64)
    assert torch.isfinite(distance.gather(1, bags)).all()
