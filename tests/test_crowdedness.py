"""Crowdedness (Table 2, Fig. 5) of hand-made images, and the tool that reports it."""

import cv2
import pytest
import torch

from detectron2.structures import Boxes

from ltm_d2.analysis.crowdedness import (
    ap_on_image_groups,
    crowdedness_group,
    group_images,
    images_by_object_count,
    object_crowdedness,
    relative_improvement,
)
from ltm_d2.evaluation.coco_ap import coco_ground_truth

from support import load_tool
from support.hand_made import perfect_detections, register_coco_dataset, write_detections, xywh

SQUARE = [0, 0, 10, 10]
# Image 1: IoU 50 / 150 = 1/3 with its neighbour (medium). Image 2: IoU 80 / 100 = 0.8 (dense).
# Image 3: one object (sparse). Image 4: IoU 20 / 180 = 1/9 (sparse).
IMAGES = [
    [(SQUARE, 1), ([5, 0, 15, 10], 1)],
    [(SQUARE, 1), ([0, 0, 10, 8], 1), ([50, 50, 60, 60], 1)],
    [(SQUARE, 1)],
    [(SQUARE, 1), ([8, 0, 18, 10], 1)],
]


@pytest.fixture
def crowded(tmp_path):
    register_coco_dataset(tmp_path, "hand_made_crowdedness", IMAGES, {1: "square"})
    return coco_ground_truth("hand_made_crowdedness", str(tmp_path))


def test_object_crowdedness_is_the_largest_iou_with_another_object():
    boxes = Boxes(
        torch.tensor([SQUARE, [0, 0, 10, 8], [5, 0, 15, 10], [50, 50, 60, 60]], dtype=torch.float32)
    )
    # IoU(0, 1) = 0.8, IoU(0, 2) = 50 / 150, IoU(1, 2) = 40 / 140, the last overlaps nothing.
    assert object_crowdedness(boxes).tolist() == pytest.approx([0.8, 0.8, 1 / 3, 0.0])


def test_a_lone_object_has_crowdedness_zero():
    assert object_crowdedness(Boxes(torch.tensor([SQUARE], dtype=torch.float32))).tolist() == [0.0]


def test_groups_include_their_upper_bounds():
    assert [crowdedness_group(c) for c in (0.0, 0.2, 0.21, 0.5, 0.51, 1.0)] == [
        "sparse",
        "sparse",
        "medium",
        "medium",
        "dense",
        "dense",
    ]


def test_hand_made_images_fall_into_their_groups(crowded):
    assert group_images(crowded) == {"sparse": [3, 4], "medium": [1], "dense": [2]}


def test_images_are_binned_by_object_count_with_an_open_last_bin(crowded):
    assert images_by_object_count(crowded, 2) == {"1": [3], "2+": [1, 2, 4]}


def test_ap_on_each_group_counts_only_its_images(crowded):
    # Every object of the dense image found exactly, nothing elsewhere.
    detections = [
        {"image_id": i, "bbox": xywh(b), "category_id": c, "score": s}
        for i, b, c, s in perfect_detections(IMAGES, lambda i: i == 2)
    ]
    aps = ap_on_image_groups(crowded, detections, group_images(crowded))
    assert aps == pytest.approx({"sparse": 0.0, "medium": 0.0, "dense": 100.0})


def test_relative_improvement_is_relative_to_the_baseline():
    assert relative_improvement(41.2, 44.4) == pytest.approx(7.77, abs=0.01)  # Table 2, sparse


def test_tool_prints_table_2_and_writes_figure_5(crowded, tmp_path, capsys):
    # A finds one of the three objects of the dense image (recall 1/3 at precision 1: COCO AP
    # averages the precision at recall 0, 0.01, ..., 1, so 34 / 101) and everything elsewhere;
    # B finds everything (AP 100).
    found_by_a = perfect_detections(IMAGES, lambda i: i != 2) + [(2, SQUARE, 1, 0.9)]
    baseline = write_detections(tmp_path / "baseline.json", found_by_a)
    new = write_detections(tmp_path / "new.json", perfect_detections(IMAGES))
    load_tool("tools/crowdedness.py").main(
        [
            "--dataset",
            "hand_made_crowdedness",
            "--results",
            baseline,
            new,
            "--names",
            "A",
            "B",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    printed = capsys.readouterr().out
    assert f"| A | 100.0 | 100.0 | {3400 / 101:.1f} |" in printed
    assert "| B | 100.0 | 100.0 | 100.0 |" in printed
    gain = 100 * (100 - 3400 / 101) / (3400 / 101)
    assert f"| relative improvement | +0.0% | +0.0% | +{gain:.1f}% |" in printed
    image = cv2.imread(str(tmp_path / "out" / "crowdedness.png"))
    assert image is not None and image.shape[0] > 200 and image.std() > 0


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('[{"image_id": 1}]', "needs the keys"),
        (
            '[{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]',
            "not in the dataset",
        ),
    ],
)
def test_tool_names_the_file_that_is_missing_or_malformed(crowded, tmp_path, content, message):
    good = write_detections(tmp_path / "good.json", perfect_detections(IMAGES))
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    with pytest.raises(SystemExit) as exit:
        load_tool("tools/crowdedness.py").main(
            [
                "--dataset",
                "hand_made_crowdedness",
                "--results",
                good,
                str(bad),
                "--output",
                str(tmp_path / "out"),
            ]
        )
    assert str(bad) in str(exit.value) and message in str(exit.value)
