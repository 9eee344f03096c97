"""
Mixed precision (SOLVER.AMP.ENABLED): the network runs in low precision, the matching in float32.
Checked on the CPU with bfloat16 autocast; on a GPU the same code runs under float16 autocast.
"""
import pytest
import torch

from detectron2.layers import cat
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import Boxes

from support import build_tiny_model, make_input, random_boxes

SIZE = (64, 96)
VARIANTS = {
    "ltm": (),
    "freeanchor": ("MODEL.LTM.MATCHING", "freeanchor"),
    "ltm_af": ("MODEL.META_ARCHITECTURE", "LTMAF", "MODEL.LTM.BBOX_REG_WEIGHT", 5.5),
}


def inputs():
    boxes = [random_boxes(5, SIZE, 0), random_boxes(3, SIZE, 1)]
    classes = [torch.tensor([0, 1, 1, 2, 0]), torch.tensor([1, 1, 5])]
    return [make_input(b, c, SIZE, seed=k) for k, (b, c) in enumerate(zip(boxes, classes))]


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("variant", VARIANTS)
def test_matching_runs_in_float32_under_autocast(storage, variant):
    """The loss under autocast is the float32 loss of the network's low-precision outputs."""
    model = build_tiny_model(*VARIANTS[variant])
    batch = inputs()
    with autocast():
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        predictions = model.head(features)
        assert predictions[0][0].dtype == torch.bfloat16, "the network runs in low precision"
        gt = [x["instances"] for x in batch]
        losses = model.forward_training(images, features, predictions, gt)
    assert all(v.dtype == torch.float32 for v in losses.values())

    logits, deltas = (
        cat([permute_to_N_HWA_K(x, k) for x in level], dim=1).float()
        for level, k in zip(predictions, (model.num_classes, 4))
    )
    anchors = Boxes.cat(model.anchor_generator(features))
    expected = model.matching_losses(anchors, logits, deltas, gt)
    for name in expected:
        torch.testing.assert_close(losses[name], expected[name], rtol=1e-6, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_autocast_training_loss_equals_float32_training(storage, variant):
    model = build_tiny_model(*VARIANTS[variant])
    batch = inputs()
    full = sum(model(batch).values())
    with autocast():
        mixed = sum(model(batch).values())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, rtol=1e-3, atol=0)
