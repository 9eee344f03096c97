"""
Mixed precision (SOLVER.AMP.ENABLED): the network runs in low precision, the matching in float32.
What it means is chosen by the hardware: on a CPU, bfloat16 autocast where the CPU computes
bfloat16 natively and float32 otherwise; on a GPU, Detectron2's AMPTrainer (float16, or bfloat16
where the GPU has it).
"""

import logging
from types import SimpleNamespace

import pytest
import torch

from detectron2.engine import SimpleTrainer
from detectron2.layers import cat
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import Boxes

from ltm_d2.engine import precision

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
    expected = model.matching.joined_losses(model, anchors, logits, deltas, gt)
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


@pytest.fixture
def native_bfloat16(monkeypatch):
    """Makes the CPU report native bfloat16 (True) or not (False), whatever this machine has."""

    def report(native: bool):
        monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: native)

    return report


def amp_cfg(tmp_path, *opts):
    return tiny_cfg("SOLVER.AMP.ENABLED", True, "OUTPUT_DIR", str(tmp_path), *opts)


@pytest.mark.slow
def test_amp_on_a_cpu_with_native_bfloat16_trains_the_network_in_bfloat16(
    tmp_path, native_bfloat16
):
    native_bfloat16(True)
    trainer = seeded_trainer(amp_cfg(tmp_path, "SOLVER.MAX_ITER", 2))
    dtypes = first_conv_output_dtypes(trainer.model)
    trainer.train()
    assert dtypes[:2] == [torch.bfloat16] * 2
    assert set(dtypes[2:]) == {torch.float32}  # the final evaluation
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


@pytest.mark.slow
def test_amp_on_a_cpu_without_native_bfloat16_trains_in_float32(tmp_path, native_bfloat16):
    native_bfloat16(False)
    trainer = seeded_trainer(amp_cfg(tmp_path, "SOLVER.MAX_ITER", 2, "TEST.EVAL_PERIOD", 0))
    assert type(trainer._trainer) is SimpleTrainer
    dtypes = first_conv_output_dtypes(trainer.model)
    trainer.train()
    assert dtypes[:2] == [torch.float32] * 2


def test_the_cpu_autocast_step_computes_the_losses_in_float32(tmp_path, native_bfloat16):
    native_bfloat16(True)
    trainer = seeded_trainer(amp_cfg(tmp_path, "SOLVER.MAX_ITER", 1, "TEST.EVAL_PERIOD", 0))
    assert isinstance(trainer._trainer, precision.CPUAutocastTrainer)
    losses = []

    def keep_training_losses(module, args, output):
        if module.training:
            losses.extend(output.values())

    trainer._trainer.model.register_forward_hook(keep_training_losses)
    trainer.train()
    assert losses and all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses)


def test_the_backward_pass_runs_outside_autocast(tmp_path, native_bfloat16):
    native_bfloat16(True)
    trainer = seeded_trainer(amp_cfg(tmp_path, "SOLVER.MAX_ITER", 1, "TEST.EVAL_PERIOD", 0))
    during_backward = []
    parameter = next(trainer.model.parameters())
    parameter.register_hook(lambda grad: during_backward.append(torch.is_autocast_enabled("cpu")))
    trainer.train()
    assert during_backward == [False]


class FakeCfg:
    """The two keys training_precision reads."""

    def __init__(self, enabled=True, gpu_precision="float16"):
        self.SOLVER = SimpleNamespace(AMP=SimpleNamespace(ENABLED=enabled, PRECISION=gpu_precision))


# (device, SOLVER.AMP.ENABLED, SOLVER.AMP.PRECISION, what the hardware reports) -> dtype
MACHINES = {
    "cpu with native bfloat16": ("cpu", True, "float16", True, torch.bfloat16),
    "cpu with emulated bfloat16": ("cpu", True, "float16", False, torch.float32),
    "cpu, amp off": ("cpu", False, "float16", True, torch.float32),
    "gpu, float16": ("cuda", True, "float16", True, torch.float16),
    "gpu with bfloat16, bfloat16": ("cuda", True, "bfloat16", True, torch.bfloat16),
    "gpu without bfloat16, bfloat16": ("cuda", True, "bfloat16", False, torch.float16),
    "gpu, amp off": ("cuda", False, "bfloat16", True, torch.float32),
    "other device": ("mps", True, "float16", True, torch.float32),
}


@pytest.mark.parametrize("machine", MACHINES)
def test_the_precision_is_chosen_by_the_hardware(monkeypatch, native_bfloat16, machine):
    device, enabled, gpu_precision, hardware_has_it, expected = MACHINES[machine]
    native_bfloat16(hardware_has_it)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args: hardware_has_it)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Fake GPU")
    chosen = precision.training_precision(FakeCfg(enabled, gpu_precision), torch.device(device))
    assert chosen.dtype == expected
    assert chosen.describe().startswith(f"Training precision: {str(expected)[6:]} ")


def test_the_log_says_why_a_cpu_without_native_bfloat16_trains_in_float32(native_bfloat16):
    native_bfloat16(False)
    chosen = precision.training_precision(FakeCfg(), torch.device("cpu"))
    line = chosen.describe()
    assert "float32" in line and "no native bfloat16" in line
    assert f"CPU ({torch.backends.cpu.get_cpu_capability()}" in line


def test_the_trainer_logs_its_precision_once(tmp_path, native_bfloat16):
    native_bfloat16(False)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("ltm_d2")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        seeded_trainer(amp_cfg(tmp_path))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [r.getMessage() for r in records if "Training precision" in r.getMessage()]
    assert len(lines) == 1 and "float32" in lines[0]
