"""The trainer's additions to DefaultTrainer."""

import os

import pytest
import torch

from ltm_d2 import load_config
from ltm_d2.engine import Trainer, create_ddp_model, scale_to_workers

from support import REPO, build_tiny_model, tiny_cfg


def fill_gradients(model, value):
    for p in model.parameters():
        p.grad = torch.full_like(p, value)


def total_norm(model):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def step_with_unit_gradients(clip_value):
    """One optimizer step (learning rate 0) of a model whose gradients are all 1; returns the
    model."""
    cfg = tiny_cfg(
        "SOLVER.CLIP_GRADIENTS.ENABLED",
        True,
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
        "full_model",
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
        clip_value,
        "SOLVER.BASE_LR",
        0.0,
    )
    model = build_tiny_model()
    optimizer = Trainer.build_optimizer(cfg, model)
    fill_gradients(model, 1.0)
    optimizer.step()
    return model


def test_full_model_clipping_bounds_the_norm_of_all_gradients_together():
    model = step_with_unit_gradients(10.0)
    assert total_norm(model) == pytest.approx(10.0, rel=1e-3)
    # Every gradient is scaled by the same factor: their directions are kept.
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.allclose(grads, grads[0].expand_as(grads))


def test_gradients_below_the_clip_value_are_left_alone():
    model = step_with_unit_gradients(1e9)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_a_single_worker_model_is_not_wrapped():
    model = build_tiny_model()
    assert create_ddp_model(model) is model


def test_the_trainer_trains_with_the_batch_and_lr_rescaled_to_its_workers(tmp_path):
    cfg = tiny_cfg(
        "SOLVER.REFERENCE_WORLD_SIZE",
        2,
        "SOLVER.IMS_PER_BATCH",
        4,
        "SOLVER.BASE_LR",
        0.02,
        "OUTPUT_DIR",
        str(tmp_path),
    )
    solver = Trainer(cfg).cfg.SOLVER  # one worker here
    assert (solver.IMS_PER_BATCH, solver.BASE_LR, solver.REFERENCE_WORLD_SIZE) == (2, 0.01, 1)


def test_a_batch_that_is_not_a_multiple_of_the_reference_world_size_is_refused_saying_what_to_do():
    path = os.path.join(REPO, "configs/COCO-Detection/ltm_R_50_FPN_1x.yaml")
    cfg = load_config(path, ["SOLVER.IMS_PER_BATCH", 4])
    with pytest.raises(
        ValueError,
        match="SOLVER.IMS_PER_BATCH 4 is not a multiple of SOLVER."
        "REFERENCE_WORLD_SIZE 8.*add SOLVER.REFERENCE_WORLD_SIZE 0",
    ):
        scale_to_workers(cfg, 1)
