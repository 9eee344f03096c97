"""Matching confidence (Fig. 6): mean-max weights of bag members, for LTM and LTM-AF, and the
tool."""

import cv2
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog

from ltm_d2.analysis.matching_confidence import (
    BagConfidence,
    accumulated_heat_map,
    annotated_input,
    bag_confidence,
)
from ltm_d2.modeling.matching import mean_max, mean_max_weights

from support import TINY_CONFIG, build_tiny_model, load_tool, tiny_cfg


def test_mean_max_weights_of_a_hand_made_bag():
    # 1 / (1 - phi) = 2, 1, 1: weights 2/4, 1/4, 1/4, and M+ = 0.5 * 0.5 = 0.25.
    phi = torch.tensor([0.5, 0.0, 0.0])
    assert mean_max_weights(phi).tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert mean_max(phi).item() == pytest.approx(0.25)


def test_weights_concentrate_on_the_member_whose_likelihood_nears_one():
    weights = mean_max_weights(torch.tensor([0.999, 0.1, 0.1, 0.1]))
    assert weights[0] > 0.99


@pytest.mark.parametrize("architecture", ["LTM", "LTMAF"])
def test_bag_confidence_gives_each_chosen_object_a_bag_of_weights_summing_to_one(architecture):
    model = build_tiny_model("MODEL.META_ARCHITECTURE", architecture)
    model.eval()
    record = DatasetCatalog.get("ltm_shapes_mini_val")[0]
    batched_input = annotated_input(tiny_cfg(), record)
    confidence = bag_confidence(model, batched_input, [0, 1])
    bag_size = 40
    assert confidence.weights.shape == (2, bag_size) and confidence.centres.shape == (
        2,
        bag_size,
        2,
    )
    assert confidence.weights.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])
    assert torch.equal(confidence.gt_boxes, batched_input["instances"].gt_boxes.tensor[:2])


def test_bag_confidence_refuses_a_plain_retinanet():
    model = build_tiny_model("MODEL.META_ARCHITECTURE", "RetinaNet")
    batched_input = annotated_input(tiny_cfg(), DatasetCatalog.get("ltm_shapes_mini_val")[0])
    with pytest.raises(TypeError, match="LTM or LTMAF"):
        bag_confidence(model, batched_input, [0])


def test_heat_map_accumulates_weights_over_checkpoints():
    one = BagConfidence(
        torch.zeros(1, 4), torch.tensor([[[2.0, 3.0], [5.0, 1.0]]]), torch.tensor([[0.75, 0.25]])
    )
    heat = accumulated_heat_map((8, 8), [one, one], sigma=0.01)  # no smoothing to speak of
    assert heat[3, 2] == pytest.approx(1.5) and heat[1, 5] == pytest.approx(0.5)
    assert heat.sum() == pytest.approx(2.0)


@pytest.mark.slow
def test_tool_draws_one_panel_per_checkpoint_and_the_heat_map(tmp_path, capsys):
    for seed in (0, 1):
        DetectionCheckpointer(build_tiny_model(seed=seed), save_dir=str(tmp_path)).save(
            f"model_{seed}"
        )
    out = tmp_path / "confidence.png"
    load_tool("tools/matching_confidence.py").main(
        [
            "--config-file",
            TINY_CONFIG,
            "--checkpoints",
            str(tmp_path / "model_0.pth"),
            str(tmp_path / "model_1.pth"),
            "--objects",
            "0",
            "--output",
            str(out),
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > 2 * image.shape[0] and image.std() > 0


def test_tool_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="missing.pth does not exist"):
        load_tool("tools/matching_confidence.py").main(
            [
                "--config-file",
                TINY_CONFIG,
                "--checkpoints",
                "missing.pth",
                "--output",
                str(tmp_path / "x.png"),
            ]
        )
