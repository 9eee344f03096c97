"""
Property-based fuzzing of the training losses: for `ltm`, `freeanchor`, `topk` and LTM-AF, the
loss and its gradients are finite for any logits in [-50, 50], any box deltas, and any objects:
0 to 1000 per image, 1 to 3 images, tiny, huge, degenerate after clipping to the image, heavily
overlapping or identical boxes (dev/loss_fuzzing.py). `make fuzz` runs the long campaign.

Hypothesis profiles (HYPOTHESIS_PROFILE): "ci", the default, runs a fixed, derandomized set of
CASES_PER_MODE cases per mode with a deadline generous enough for a slow 2-core machine; "dev"
draws new random cases, ten times as many.
"""

import os
from datetime import timedelta

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dev.loss_fuzzing import (
    BOX_KINDS,
    LOGIT_KINDS,
    NUM_CLASSES,
    SIZE,
    BatchCase,
    ImageCase,
    anchors_of,
    check_case,
    logits_and_deltas,
)
from ltm_d2.modeling.matching import neg_log

from support import VARIANTS, build_tiny_model, make_input

MODES = list(VARIANTS)

CASES_PER_MODE = 25
settings.register_profile(
    "ci",
    max_examples=CASES_PER_MODE,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=10 * CASES_PER_MODE, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

seeds = st.integers(0, 2**31 - 1)
image_cases = st.builds(
    ImageCase, st.one_of(st.integers(0, 8), st.integers(0, 1000)), st.sampled_from(BOX_KINDS), seeds
)
batch_cases = st.builds(
    BatchCase,
    st.lists(image_cases, min_size=1, max_size=3).map(tuple),
    st.sampled_from(LOGIT_KINDS),
    st.floats(0.0, 50.0),
    seeds,
)


@pytest.fixture(scope="module")
def models_and_anchors():
    """For each mode, the tiny model and the anchors of a SIZE image."""
    built = {}
    for mode in MODES:
        model = build_tiny_model(*VARIANTS[mode], "MODEL.RETINANET.NUM_CLASSES", NUM_CLASSES)
        built[mode] = (model, anchors_of(model))
    return built


@pytest.mark.parametrize("mode", MODES)
def test_loss_and_gradients_are_finite_for_any_logits_deltas_and_boxes(models_and_anchors, mode):
    model, anchors = models_and_anchors[mode]
    cases_run = []

    @given(case=batch_cases)
    def check(case):
        cases_run.append(case)
        assert check_case(model, anchors, case) is None, case

    check()
    assert len(cases_run) >= settings().max_examples
    assert max(sum(i.num_objects for i in c.images) for c in cases_run) > 500  # crowds were tried


# Bugs the fuzzing found, each pinned by a test of its own.


def test_neg_log_of_a_float32_value_below_the_normal_range_has_a_finite_gradient():
    x = torch.tensor([1e-40, 0.0], requires_grad=True)  # M+ of a bag of tiny likelihoods
    loss = neg_log(x)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(loss, torch.full((2,), -torch.log(torch.tensor(torch.finfo().tiny))))


@pytest.mark.parametrize("mode", MODES)
def test_objects_with_an_empty_box_are_left_out_like_the_mapper_does(
    models_and_anchors, storage, mode
):
    model, anchors = models_and_anchors[mode]

    def losses_of(instances):
        model.loss_normalizer = 100.0  # "topk": RetinaNet's running normaliser, equal for both
        return model.dense_losses([anchors], [logits], [deltas], [instances])

    boxes = [[4.0, 4.0, 30.0, 20.0], [64.0, 0.0, 64.0, 0.0], [10.0, 10.0, 10.0, 40.0]]
    with_empty = make_input(boxes, [1, 2, 3], SIZE)["instances"]
    without = make_input(boxes[:1], [1], SIZE)["instances"]
    case = BatchCase((ImageCase(3, "any", 0),), "uniform", 5.0, 0)
    logits, deltas = logits_and_deltas(case, len(anchors))
    losses = losses_of(with_empty)
    assert losses == losses_of(without)
    sum(losses.values()).backward()
    assert torch.isfinite(deltas.grad).all() and torch.isfinite(logits.grad).all()


def test_topk_with_six_degenerate_boxes_uniform_logits_and_wild_deltas(models_and_anchors):
    model, anchors = models_and_anchors["topk"]
    for seed in range(5):
        case = BatchCase((ImageCase(6, "degenerate", seed),), "uniform", 31.0, seed)
        assert check_case(model, anchors, case) is None, case
