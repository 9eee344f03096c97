"""The trainer's additions to DefaultTrainer."""
import pytest
import torch

from ltm_d2.engine import Trainer, create_ddp_model

from support import build_tiny_model, tiny_cfg


def fill_gradients(model, value):
    for p in model.parameters():
        p.grad = torch.full_like(p, value)


def total_norm(model):
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def step_with_unit_gradients(clip_value):
    """One optimizer step (learning rate 0) of a model whose gradients are all 1; returns the model."""
    cfg = tiny_cfg("SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model",
                   "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", clip_value, "SOLVER.BASE_LR", 0.0)
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
