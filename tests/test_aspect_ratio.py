"""The aspect-ratio analysis (Fig. 7, Fig. 8) on a hand-made two-category case."""

import cv2
import numpy as np
import pytest

from ltm_d2.analysis.aspect_ratio import category_aspect_ratios, fit_line
from ltm_d2.evaluation.coco_ap import (
    coco_ground_truth,
    evaluate_boxes,
    load_detections,
    per_category_ap,
)

from support import load_tool
from support.hand_made import perfect_detections, register_coco_dataset, write_detections

# Category 1, squares: 10x10 and 20x20, aspect ratio 1. Category 2, bars: 40x10 (4) and 10x20
# (max(w/h, h/w) = 2), mean aspect ratio 3.
IMAGES = [
    [([0, 0, 10, 10], 1), ([0, 50, 40, 60], 2)],
    [([30, 30, 50, 50], 1), ([70, 10, 80, 30], 2)],
]
# The baseline finds only the squares (AP 100 and 0), the new model everything (100 and 100):
# the gains are 0 at aspect ratio 1 and 100 at 3, so the fitted slope is 100 / 2 = 50 points
# per unit of aspect ratio, and the intercept -50.


@pytest.fixture
def two_categories(tmp_path):
    register_coco_dataset(tmp_path, "hand_made_aspect_ratio", IMAGES, {1: "square", 2: "bar"})
    return coco_ground_truth("hand_made_aspect_ratio", str(tmp_path))


def squares_only():
    return [d for d in perfect_detections(IMAGES) if d[2] == 1]


def test_category_aspect_ratio_is_the_mean_of_max_w_h_and_h_w(two_categories):
    assert category_aspect_ratios(two_categories, [1, 2]).tolist() == pytest.approx([1.0, 3.0])


def test_per_category_ap_of_hand_made_detections(two_categories, tmp_path):
    detections = load_detections(write_detections(tmp_path / "d.json", squares_only()))
    assert per_category_ap(evaluate_boxes(two_categories, detections)).tolist() == pytest.approx(
        [100.0, 0.0]
    )


def test_fitted_line_through_hand_made_gains():
    slope, intercept = fit_line(np.array([1.0, 3.0, np.nan]), np.array([0.0, 100.0, 7.0]))
    assert (slope, intercept) == pytest.approx((50.0, -50.0))


def test_fitting_needs_two_categories():
    with pytest.raises(ValueError, match="at least two categories"):
        fit_line(np.array([1.0]), np.array([0.0]))


def test_tool_prints_the_slope_and_writes_figures_7_and_8(two_categories, tmp_path, capsys):
    baseline = write_detections(tmp_path / "baseline.json", squares_only())
    new = write_detections(tmp_path / "new.json", perfect_detections(IMAGES))
    out = tmp_path / "out"
    load_tool("tools/aspect_ratio.py").main(
        ["--dataset", "hand_made_aspect_ratio", "--results", baseline, new, "--output", str(out)]
    )
    printed = capsys.readouterr().out
    assert "| square | 1.00 | 100.0 | 100.0 | +0.0 |" in printed
    assert "| bar | 3.00 | 0.0 | 100.0 | +100.0 |" in printed
    assert "gain = +50.000 * aspect ratio -50.000" in printed
    for name in ("aspect_ratio_gain.png", "category_ap.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 200 and image.std() > 0
