"""MODEL.LTM.MATCHING chooses one matching class, which gives the losses; LTM-AF takes only the
matchings that learn."""

import pytest
import torch

from detectron2.utils.events import EventStorage

from ltm_d2.config import MATCHING_MODES
from ltm_d2.modeling.matchings import (
    FreeAnchorMatching,
    MeanMaxMatching,
    TopKLabelling,
    build_matching,
)

from support import build_tiny_model, make_input

CLASSES = {"ltm": MeanMaxMatching, "freeanchor": FreeAnchorMatching, "topk": TopKLabelling}
LOSS_NAMES = {
    "ltm": {"loss_match_pos", "loss_match_neg", "loss_background"},
    "freeanchor": {"loss_match_pos", "loss_background"},
    "topk": {"loss_cls", "loss_box_reg"},
}


def test_every_matching_of_the_config_builds_its_class_named_by_the_config_value():
    assert set(CLASSES) == set(MATCHING_MODES)
    for mode in MATCHING_MODES:
        matching = build_matching(mode, iou_threshold=0.6, alpha=0.5, gamma=2.0)
        assert type(matching) is CLASSES[mode] and matching.name == mode


def test_an_unknown_matching_is_refused_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"MODEL.LTM.MATCHING must be one of .*'topk'.*got 'iou'"):
        build_matching("iou", iou_threshold=0.6, alpha=0.5, gamma=2.0)


def test_the_matching_keeps_the_config_values_it_uses():
    model = build_tiny_model(
        "MODEL.LTM.MATCHING",
        "freeanchor",
        "MODEL.LTM.IOU_THRESHOLD",
        0.7,
        "MODEL.LTM.FOCAL_LOSS_ALPHA",
        0.25,
        "MODEL.LTM.FOCAL_LOSS_GAMMA",
        1.5,
    )
    assert (model.matching.iou_threshold, model.matching.alpha, model.matching.gamma) == (
        0.7,
        0.25,
        1.5,
    )


@pytest.mark.parametrize("mode", MATCHING_MODES)
def test_the_model_trains_with_the_losses_of_its_matching(mode):
    model = build_tiny_model("MODEL.LTM.MATCHING", mode)
    model.train()
    boxes = torch.tensor([[8.0, 8.0, 40.0, 36.0], [20.0, 30.0, 60.0, 60.0]])
    with EventStorage():  # RetinaNet's losses log the number of positives
        losses = model([make_input(boxes, torch.tensor([0, 1]))])
    assert set(losses) == LOSS_NAMES[mode]
    assert all(torch.isfinite(v) for v in losses.values())


def test_ltm_af_refuses_the_matching_that_does_not_learn():
    with pytest.raises(
        ValueError, match="LTMAF supports MODEL.LTM.MATCHING 'ltm' and 'freeanchor'"
    ):
        build_tiny_model("MODEL.META_ARCHITECTURE", "LTMAF", "MODEL.LTM.MATCHING", "topk")
