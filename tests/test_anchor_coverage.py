"""Anchor coverage: positives under RetinaNet's IoU rule, best and K-th best anchor IoU per
object."""

import runpy
import sys

import pytest
import torch

from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes

from ltm_d2.analysis.anchor_coverage import object_coverage

from support import REPO, TINY_CONFIG

MATCHER = Matcher([0.4, 0.5], [0, -1, 1], allow_low_quality_matches=True)
# The object itself, the object shifted by half its width (IoU 1/3), and an anchor far away.
ANCHORS = Boxes(torch.tensor([[0.0, 0, 20, 20], [10, 0, 30, 20], [100, 100, 120, 120]]))


def test_an_object_with_an_aligned_anchor_has_one_positive_and_best_iou_one():
    coverage = object_coverage(
        Boxes(torch.tensor([[0.0, 0, 20, 20]])), ANCHORS, MATCHER, bag_size=2
    )
    assert coverage.positives.tolist() == [1]
    assert coverage.best_iou.tolist() == [1.0]
    assert coverage.kth_iou.tolist() == [pytest.approx(1 / 3)]


def test_an_object_without_an_anchor_of_iou_half_keeps_its_best_anchor_as_its_one_positive():
    bar = Boxes(torch.tensor([[0.0, 8, 24, 12]]))  # 24 x 4: IoU 80/416 and 56/440 with the anchors
    coverage = object_coverage(bar, ANCHORS, MATCHER, bag_size=3)
    assert coverage.positives.tolist() == [1]
    assert coverage.best_iou.item() == pytest.approx(80 / 416)
    assert coverage.kth_iou.tolist() == [0.0]


def test_anchors_are_shared_between_objects_by_the_larger_iou():
    objects = Boxes(torch.tensor([[0.0, 0, 20, 20], [10, 0, 30, 20]]))
    coverage = object_coverage(objects, ANCHORS, MATCHER, bag_size=1)
    assert coverage.positives.tolist() == [1, 1]


def run_tool(capsys, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["anchor_coverage.py", *args])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(f"{REPO}/tools/anchor_coverage.py", run_name="__main__")
    return exit.value.code, capsys.readouterr().out


def test_tool_prints_a_row_per_category_and_one_for_all_objects(capsys, monkeypatch):
    code, out = run_tool(
        capsys, monkeypatch, "--config-file", TINY_CONFIG, "--dataset", "ltm_shapes_mini_val"
    )
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and "category" not in line]
    assert [row.split(" | ")[0] for row in rows][-1] == "| all"
    assert 2 <= len(rows) <= 7


def test_tool_refuses_an_anchor_free_detector(capsys, monkeypatch):
    code, _ = run_tool(
        capsys, monkeypatch, "--config-file", TINY_CONFIG, "MODEL.META_ARCHITECTURE", "LTMAF"
    )
    assert "has no anchors" in str(code)
