"""
Mixed precision (SOLVER.AMP.ENABLED): the network runs in low precision, the matching in float32.
On the CPU under bfloat16 autocast (the trainer's SOLVER.AMP.ENABLED on a CPU); on a GPU under
float16 autocast, as Detectron2's AMPTrainer trains.
"""

import pytest
import torch

from detectron2.engine import SimpleTrainer
from detectron2.layers import cat
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import Boxes

from ltm_d2.engine.trainer import train_network_in_bfloat16

from support import build_tiny_model, make_input, random_boxes, seeded_trainer, tiny_cfg

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


LOW_PRECISION = {"cpu": torch.bfloat16, "cuda": torch.float16}


def autocast(device):
    return torch.autocast(device, dtype=LOW_PRECISION[device])


@pytest.mark.parametrize("variant", VARIANTS)
def test_matching_runs_in_float32_under_autocast(storage, device, variant):
    """The loss under autocast is the float32 loss of the network's low-precision outputs."""
    model = build_tiny_model(*VARIANTS[variant], device=device)
    batch = inputs()
    with autocast(device):
        images = model.preprocess_image(batch)
        features = model.backbone(images.tensor)
        features = [features[f] for f in model.head_in_features]
        predictions = model.head(features)
        assert predictions[0][0].dtype == LOW_PRECISION[device], "the network runs in low precision"
        gt = [x["instances"].to(device) for x in batch]
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
def test_autocast_training_loss_equals_float32_training(storage, device, variant):
    model = build_tiny_model(*VARIANTS[variant], device=device)
    batch = inputs()
    full = sum(model(batch).values())
    with autocast(device):
        mixed = sum(model(batch).values())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, rtol=1e-3, atol=0)


def first_conv_output_dtypes(model):
    """The dtypes of the backbone's first convolution's outputs, one per forward pass."""
    dtypes = []
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    return dtypes


def test_amp_on_a_cpu_trains_the_network_in_bfloat16_and_the_losses_in_float32(storage):
    model = build_tiny_model("MODEL.RETINANET.NUM_CLASSES", 6)
    train_network_in_bfloat16(model)
    dtypes = first_conv_output_dtypes(model)
    losses = model(inputs())
    assert dtypes == [torch.bfloat16]
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_amp_on_a_cpu_leaves_inference_in_float32():
    model = build_tiny_model()
    train_network_in_bfloat16(model)
    dtypes = first_conv_output_dtypes(model.eval())
    with torch.no_grad():
        model([{"image": x["image"]} for x in inputs()])
    assert dtypes == [torch.float32]


def test_a_cpu_trainer_with_amp_trains_in_bfloat16_and_evaluates_in_float32(tmp_path):
    cfg = tiny_cfg("SOLVER.AMP.ENABLED", True, "OUTPUT_DIR", str(tmp_path))
    trainer = seeded_trainer(cfg)
    assert type(trainer._trainer) is SimpleTrainer
    dtypes = first_conv_output_dtypes(trainer.model)
    trainer.train()
    iterations = cfg.SOLVER.MAX_ITER
    assert dtypes[:iterations] == [torch.bfloat16] * iterations
    assert set(dtypes[iterations:]) == {torch.float32}  # the final evaluation
