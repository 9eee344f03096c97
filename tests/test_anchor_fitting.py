"""Fitting anchors to a dataset: the scale c x stride of every level's base size, the bag size K."""

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

from detectron2.structures import Boxes

from ltm_d2 import load_config
from ltm_d2.analysis.anchor_coverage import ImageObjects
from ltm_d2.analysis.anchor_fitting import (
    AnchorScore,
    choose_bag_size,
    choose_scale,
    fit_anchors,
    fitted_config,
    override_line,
)

from support import REPO, TINY_CONFIG, tiny_cfg
from support.user_data import make_images, write_csv

TINY_SIZES = [
    [16.0, 20.16, 25.4],
    [32.0, 40.32, 50.8],
    [64.0, 80.63, 101.59],
    [128.0, 161.27, 203.19],
    [256.0, 322.54, 406.37],
]


def square_objects(side: float, count: int = 12, image: int = 128):
    """`count` 128 x 128 images, each with one square of `side` px at a position of its own."""
    offsets = torch.linspace(0, image - side, count)  # (count,)
    return [
        ImageObjects(
            image,
            image,
            Boxes(torch.tensor([[o, o / 2, o + side, o / 2 + side]])),
            torch.zeros(1, dtype=torch.long),
        )
        for o in offsets.tolist()
    ]


def score(share, positives):
    return AnchorScore([[1.0]], share, positives, 0.5, np.zeros(50))


def test_fitted_anchors_cover_objects_of_a_known_size_that_anchors_8x_too_small_miss():
    too_small = str([[s / 8 for s in level] for level in TINY_SIZES])
    fit = fit_anchors(tiny_cfg("MODEL.ANCHOR_GENERATOR.SIZES", too_small), square_objects(64))
    assert fit.after.share == 1.0
    assert fit.before.share < 0.5


def test_the_fitted_scale_grows_with_the_objects():
    small = fit_anchors(tiny_cfg(), square_objects(20)).scale
    large = fit_anchors(tiny_cfg(), square_objects(64)).scale
    assert small < large


def test_coverage_comes_before_positives_so_anchors_outgrowing_the_objects_are_not_chosen():
    # The larger scale has more positives for the objects it still covers, but covers 5% fewer.
    assert choose_scale([score(0.95, 3.0), score(0.90, 9.0)]) == 0


def test_within_two_points_of_the_best_coverage_the_most_positives_win():
    assert choose_scale([score(0.950, 3.0), score(0.932, 5.0), score(0.92, 9.0)]) == 1


def test_on_the_bundled_tuning_split_twice_the_stride_wins_over_one_and_a_half():
    # The figures of 1.25, 1.5, 2 and 2.5 x stride on ltm_shapes_small_tune (docs/study.md).
    candidates = [score(0.642, 2.84), score(0.698, 3.63), score(0.686, 5.10), score(0.624, 6.31)]
    assert choose_scale(candidates) == 2


def test_equal_figures_choose_the_smaller_scale():
    assert choose_scale([score(0.9, 4.0), score(0.9, 4.0)]) == 0


def test_the_bag_size_is_the_largest_whose_median_kth_iou_reaches_the_background_threshold():
    median_top_iou = np.linspace(0.8, 0.2, 50)  # the K-th best: 0.8 - 0.6 (K - 1) / 49
    assert choose_bag_size(median_top_iou, 0.4) == 30
    assert choose_bag_size(median_top_iou, 0.9) == 5


def test_the_fitted_bag_size_is_a_multiple_of_5_from_5_to_50():
    fit = fit_anchors(tiny_cfg(), square_objects(40))
    assert 5 <= fit.bag_size <= 50 and fit.bag_size % 5 == 0


def test_the_override_line_reproduces_the_sizes_and_bag_size_through_load_config():
    sizes = [[12.0, 15.12, 19.05], [24.0, 30.24, 38.1]]
    cfg = load_config(TINY_CONFIG, shlex.split(override_line(sizes, 15)))
    assert [list(level) for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES] == sizes
    assert cfg.MODEL.LTM.BAG_SIZE == 15


def test_the_fitted_config_file_has_the_config_as_base_and_the_fitted_values(tmp_path):
    output = tmp_path / "fitted.yaml"
    output.write_text(fitted_config(TINY_CONFIG, str(output), TINY_SIZES, 15))
    cfg = load_config(str(output))
    assert [list(level) for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES] == TINY_SIZES
    assert cfg.MODEL.LTM.BAG_SIZE == 15
    assert cfg.SOLVER.MAX_ITER == tiny_cfg().SOLVER.MAX_ITER


def run_tool(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    command = [sys.executable, f"{REPO}/tools/fit_anchors.py", "--config-file", TINY_CONFIG, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_command_fits_a_csv_dataset_and_prints_a_line_load_config_accepts(tmp_path):
    spec = f"csv:{write_csv(str(tmp_path), make_images(4))}"
    result = run_tool("--dataset", spec)  # the tool registers the dataset the config does not name
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Dataset {spec}: 4 images")
    assert any(line.startswith("| AFTER (fitted) |") for line in lines)
    opts = shlex.split(lines[-1])
    assert opts[0] == "MODEL.ANCHOR_GENERATOR.SIZES" and opts[2] == "MODEL.LTM.BAG_SIZE"
    load_config(TINY_CONFIG, opts)


@pytest.mark.slow
def test_the_command_refuses_an_anchor_free_detector():
    result = run_tool("MODEL.META_ARCHITECTURE", "LTMAF")
    assert result.returncode != 0
    assert "has no anchors" in result.stderr


def test_objects_of_big_images_are_measured_in_their_tiles_when_tiling_is_on():
    from detectron2.structures import BoxMode

    from ltm_d2.analysis.anchor_coverage import input_objects

    record = {
        "file_name": "big.png",
        "image_id": 0,
        "height": 512,
        "width": 512,
        "annotations": [
            {"bbox": [10.0, 10.0, 74.0, 74.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
        ],
    }
    whole = input_objects(
        [record], tiny_cfg()
    )  # resized 512 -> 128: the 64 px object becomes 16 px
    tiled = input_objects([record], tiny_cfg("INPUT.TILING.SIZE", 128, "INPUT.TILING.OVERLAP", 0.0))
    assert whole[0].boxes.area().sqrt().item() == 16.0
    assert [len(image.boxes) for image in tiled] == [1]
    assert tiled[0].boxes.area().sqrt().item() == 64.0
