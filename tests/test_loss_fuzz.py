"""
Property-based fuzzing of the matching loss (docs/method.md, "Numerics"): for `ltm`,
`freeanchor` and LTM-AF, the loss and its gradients are finite for any logits in [-50, 50], any
box deltas, and any objects: 0 to 1000 per image, 1 to 3 images, tiny, huge, degenerate after
clipping to the image, heavily overlapping or identical boxes.

Hypothesis profiles (HYPOTHESIS_PROFILE): "ci", the default, runs a fixed, derandomized set of
CASES_PER_MODE cases per mode with a deadline generous enough for a slow 2-core machine; "dev"
draws new random cases, ten times as many.
"""
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Tuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectron2.structures import Boxes, Instances

from ltm_d2.modeling.matching import neg_log

from support import MATCHING_MODES, VARIANTS, build_tiny_model, make_input

CASES_PER_MODE = 25
settings.register_profile(
    "ci", max_examples=CASES_PER_MODE, derandomize=True, database=None,
    deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=10 * CASES_PER_MODE, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SIZE = (64, 64)  # H, W of every image
NUM_CLASSES = 6
BOX_KINDS = ("tiny", "huge", "degenerate", "overlapping", "identical", "any")
LOGIT_KINDS = ("uniform", "saturated_low", "saturated_high", "plus_or_minus_50")


@dataclass(frozen=True)
class ImageCase:
    num_objects: int
    box_kind: str
    seed: int


@dataclass(frozen=True)
class BatchCase:
    images: Tuple[ImageCase, ...]
    logit_kind: str
    delta_scale: float
    seed: int


seeds = st.integers(0, 2**31 - 1)
image_cases = st.builds(
    ImageCase, st.one_of(st.integers(0, 8), st.integers(0, 1000)), st.sampled_from(BOX_KINDS), seeds
)
batch_cases = st.builds(
    BatchCase, st.lists(image_cases, min_size=1, max_size=3).map(tuple),
    st.sampled_from(LOGIT_KINDS), st.floats(0.0, 50.0), seeds,
)


def objects(case: ImageCase) -> Instances:
    """The objects of one image: boxes of `case.box_kind`, clipped to the image as Detectron2's
    mapper clips them (the mapper would then drop the empty ones; they are kept here)."""
    g = torch.Generator().manual_seed(case.seed)
    n, (h, w) = case.num_objects, SIZE
    kind = case.box_kind

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=g)

    if kind == "tiny":
        xy = uniform(0, w, n, 2)
        boxes = torch.cat([xy, xy + 10 ** uniform(-4.9, 0.3, n, 2)], dim=1)  # 1.3e-5 to 2 px
    elif kind == "huge":
        centre, half = uniform(-w, 2 * w, n, 2), uniform(w, 100 * w, n, 2)
        boxes = torch.cat([centre - half, centre + half], dim=1)
    elif kind == "degenerate":  # zero width or height once clipped: on or past a border
        x0 = torch.where(torch.rand(n, generator=g) < 0.5, uniform(w, 2 * w, n), uniform(0, w, n))
        y0 = uniform(-h, h, n)
        boxes = torch.stack([x0, y0, x0 + uniform(0, w, n) * (x0 >= w), y0], dim=1)
    elif kind == "overlapping":
        centre = uniform(0, w, 1, 2) + uniform(-1.0, 1.0, n, 2)
        half = uniform(2.0, w / 2, 1, 2) * uniform(0.9, 1.1, n, 2)
        boxes = torch.cat([centre - half, centre + half], dim=1)
    elif kind == "identical":
        xy = uniform(0, w / 2, 1, 2)
        boxes = torch.cat([xy, xy + uniform(1.0, w / 2, 1, 2)], dim=1).expand(n, 4)
    else:
        xy0, xy1 = uniform(-w, 2 * w, n, 2), uniform(-w, 2 * w, n, 2)
        boxes = torch.cat([torch.minimum(xy0, xy1), torch.maximum(xy0, xy1)], dim=1)
    instances = Instances(SIZE)
    instances.gt_boxes = Boxes(boxes.reshape(-1, 4).contiguous())
    instances.gt_boxes.clip(SIZE)
    instances.gt_classes = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return instances


def logits_and_deltas(case: BatchCase, num_anchors: int):
    """(N, J, C) logits in [-50, 50] of `case.logit_kind` and (N, J, 4) deltas in ±delta_scale."""
    g = torch.Generator().manual_seed(case.seed)
    shape = (len(case.images), num_anchors, NUM_CLASSES)
    unit = torch.rand(*shape, generator=g)
    logits = {
        "uniform": unit * 100 - 50,
        "saturated_low": unit * 10 - 50,
        "saturated_high": unit * 10 + 40,
        "plus_or_minus_50": torch.where(unit < 0.5, -50.0, 50.0),
    }[case.logit_kind]
    deltas = (torch.rand(len(case.images), num_anchors, 4, generator=g) * 2 - 1) * case.delta_scale
    return logits.requires_grad_(True), deltas.requires_grad_(True)


@pytest.fixture(scope="module")
def models_and_anchors():
    """For each mode, the tiny model and the anchors of a SIZE image."""
    built = {}
    for mode in MATCHING_MODES:
        model = build_tiny_model(*VARIANTS[mode], "MODEL.RETINANET.NUM_CLASSES", NUM_CLASSES)
        with torch.no_grad():
            features = model.backbone(torch.zeros(1, 3, *SIZE))
        anchors = model.anchor_generator([features[f] for f in model.head_in_features])
        built[mode] = (model, Boxes.cat(anchors))
    return built


@pytest.mark.parametrize("mode", MATCHING_MODES)
def test_loss_and_gradients_are_finite_for_any_logits_deltas_and_boxes(models_and_anchors, mode):
    model, anchors = models_and_anchors[mode]
    cases_run = []

    @given(case=batch_cases)
    def check(case):
        cases_run.append(case)
        gt = [objects(image) for image in case.images]
        logits, deltas = logits_and_deltas(case, len(anchors))
        losses = model.matching_losses(anchors, logits, deltas, gt)
        sum(losses.values()).backward()
        assert all(torch.isfinite(v) for v in losses.values()), (case, losses)
        assert torch.isfinite(logits.grad).all() and torch.isfinite(deltas.grad).all(), case

    check()
    assert len(cases_run) >= settings().max_examples
    assert max(sum(i.num_objects for i in c.images) for c in cases_run) > 500  # crowds were tried


# Two bugs the fuzzing found, each pinned by a test of its own.


def test_neg_log_of_a_float32_value_below_the_normal_range_has_a_finite_gradient():
    x = torch.tensor([1e-40, 0.0], requires_grad=True)  # M+ of a bag of tiny likelihoods
    loss = neg_log(x)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(loss, torch.full((2,), -torch.log(torch.tensor(torch.finfo().tiny))))


@pytest.mark.parametrize("mode", MATCHING_MODES)
def test_objects_with_an_empty_box_are_left_out_like_the_mapper_does(models_and_anchors, mode):
    model, anchors = models_and_anchors[mode]
    boxes = [[4.0, 4.0, 30.0, 20.0], [64.0, 0.0, 64.0, 0.0], [10.0, 10.0, 10.0, 40.0]]
    with_empty = make_input(boxes, [1, 2, 3], SIZE)["instances"]
    without = make_input(boxes[:1], [1], SIZE)["instances"]
    case = BatchCase((ImageCase(3, "any", 0),), "uniform", 5.0, 0)
    logits, deltas = logits_and_deltas(case, len(anchors))
    losses = model.matching_losses(anchors, logits, deltas, [with_empty])
    assert losses == model.matching_losses(anchors, logits, deltas, [without])
    sum(losses.values()).backward()
    assert torch.isfinite(deltas.grad).all() and torch.isfinite(logits.grad).all()
