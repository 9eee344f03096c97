"""No NaN or Inf in any loss or gradient, whatever the logits and boxes (docs/method.md,
"Numerics")."""

import pytest
import torch

from detectron2.structures import Boxes

from support import MATCHING_MODES, VARIANTS, build_tiny_model, make_input, random_boxes

MODES = list(VARIANTS)
SIZE = (64, 64)


def assert_finite_loss_and_gradients(model, inputs):
    losses = model(inputs)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all(), name


def some_objects(seed=0, n=4):
    return make_input(random_boxes(n, SIZE, seed), torch.arange(n) % 6, SIZE, seed=seed)


def no_objects(seed=0):
    return make_input(torch.zeros(0, 4), torch.zeros(0), SIZE, seed=seed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("logit", [-50.0, 50.0])
def test_saturated_logits(storage, device, mode, logit):
    model = build_tiny_model(*VARIANTS[mode], device=device)
    with torch.no_grad():
        model.head.cls_score.weight.zero_()
        model.head.cls_score.bias.fill_(logit)
    assert_finite_loss_and_gradients(model, [some_objects(0), some_objects(1)])


@pytest.mark.parametrize("mode", MATCHING_MODES)
def test_logits_anywhere_in_minus_50_to_50_with_wild_deltas(storage, device, mode):
    model = build_tiny_model(*VARIANTS[mode], device=device)
    inputs = [some_objects(0), some_objects(1, n=7)]
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    anchors = model.anchor_generator([features[f] for f in model.head_in_features])
    anchors = Boxes.cat(anchors)
    g = torch.Generator().manual_seed(0)
    logits = (torch.rand(2, len(anchors), 6, generator=g) * 100 - 50).to(device).requires_grad_()
    deltas = (torch.randn(2, len(anchors), 4, generator=g) * 20).to(device).requires_grad_()
    gt = [x["instances"].to(device) for x in inputs]
    losses = model.matching.joined_losses(model, anchors, logits, deltas, gt)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.isfinite(logits.grad).all() and torch.isfinite(deltas.grad).all()


@pytest.mark.parametrize("mode", MODES)
def test_an_image_without_objects_beside_one_with_objects(storage, device, mode):
    model = build_tiny_model(*VARIANTS[mode], device=device)
    assert_finite_loss_and_gradients(model, [no_objects(0), some_objects(1)])


@pytest.mark.parametrize("mode", MODES)
def test_a_batch_without_any_object(storage, device, mode):
    model = build_tiny_model(*VARIANTS[mode], device=device)
    assert_finite_loss_and_gradients(model, [no_objects(0), no_objects(1)])


@pytest.mark.parametrize("mode", MODES)
def test_fewer_anchors_than_the_bag_size(storage, device, mode):
    model = build_tiny_model(*VARIANTS[mode], "MODEL.LTM.BAG_SIZE", 100000, device=device)
    assert_finite_loss_and_gradients(model, [some_objects(0), some_objects(1)])


@pytest.mark.parametrize("mode", MODES)
def test_boxes_on_and_past_the_image_border(storage, device, mode):
    boxes = [
        [-20.0, -10.0, 30.0, 40.0],
        [0.0, 0.0, 64.0, 64.0],
        [50.0, 50.0, 200.0, 90.0],
        [63.0, 0.0, 64.0, 12.0],
    ]
    model = build_tiny_model(*VARIANTS[mode], device=device)
    assert_finite_loss_and_gradients(model, [make_input(boxes, [0, 1, 2, 3], SIZE)])


@pytest.mark.parametrize("mode", MODES)
def test_more_than_500_objects_in_an_image(storage, device, mode):
    model = build_tiny_model(*VARIANTS[mode], device=device)
    crowd = make_input(
        random_boxes(600, (128, 128), seed=3, min_size=2.0), torch.arange(600) % 6, (128, 128)
    )
    assert_finite_loss_and_gradients(model, [crowd])


@pytest.mark.parametrize("mode", MATCHING_MODES)
def test_bag_sample_trains_with_finite_losses(storage, device, mode):
    model = build_tiny_model(*VARIANTS[mode], "MODEL.LTM.BAG_SAMPLE", 8, device=device)
    assert_finite_loss_and_gradients(model, [some_objects(0), some_objects(1)])
