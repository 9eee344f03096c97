"""The trainer checks its data before training, skips unreadable images, and names the last
checkpoint when the loss becomes NaN."""

import os

import pytest
import torch

from detectron2.data.datasets import register_coco_instances

from ltm_d2.data.validation import DatasetError, register_checked_coco
from ltm_d2.engine import Trainer

from support import seeded_trainer, tiny_cfg
from support.coco_files import spoil_image_file, with_changes, write_coco

SMALL_INPUT = (
    "INPUT.MIN_SIZE_TRAIN",
    (48,),
    "INPUT.MAX_SIZE_TRAIN",
    64,
    "TEST.EVAL_PERIOD",
    0,
    "DATASETS.TEST",
    "()",
)


def test_datasets_registered_without_checks_are_checked_before_training(tmp_path):
    coco = with_changes("annotations", 31, bbox=[0.0, 0.0, 64.0, float("nan")])
    json_file, image_root = write_coco(tmp_path, coco)
    register_coco_instances("test_plain_registration", {}, json_file, image_root)
    cfg = tiny_cfg("DATASETS.TRAIN", ("test_plain_registration",))
    with pytest.raises(DatasetError, match="image id 3, annotation id 31: bbox .* NaN"):
        Trainer.build_train_loader(cfg)


@pytest.mark.slow
def test_training_skips_an_unreadable_image_and_reports_it(tmp_path):
    json_file, image_root = write_coco(tmp_path / "data")
    register_checked_coco("test_train_with_a_bad_image", {}, json_file, image_root)
    spoil_image_file(os.path.join(image_root, "002.jpg"), "truncated")
    cfg = tiny_cfg(
        "DATASETS.TRAIN",
        ("test_train_with_a_bad_image",),
        "SOLVER.MAX_ITER",
        2,
        "DATALOADER.MAX_BAD_IMAGE_FRACTION",
        0.25,
        "OUTPUT_DIR",
        str(tmp_path / "run"),
        *SMALL_INPUT,
    )
    trainer = seeded_trainer(cfg)
    trainer.train()
    assert trainer.iter == 2
    assert trainer.storage.history("data/skipped_images").latest() == 1


def trainer_with_nan_loss_at(tmp_path, iteration):
    """A tiny trainer whose loss becomes NaN at `iteration`, checkpointing every iteration."""
    cfg = tiny_cfg("SOLVER.CHECKPOINT_PERIOD", 1, "OUTPUT_DIR", str(tmp_path), *SMALL_INPUT)
    trainer = seeded_trainer(cfg)
    forward = trainer.model.forward

    def forward_with_nan(batched_inputs):
        losses = forward(batched_inputs)
        if trainer.iter == iteration:
            losses["loss_background"] = losses["loss_background"] * float("nan")
        return losses

    trainer.model.forward = forward_with_nan
    return trainer


def test_a_nan_loss_stops_training_naming_the_iteration_and_the_last_checkpoint(tmp_path):
    trainer = trainer_with_nan_loss_at(tmp_path, iteration=1)
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(FloatingPointError) as error:
        trainer.train()
    last = os.path.join(str(tmp_path), "model_0000000.pth")
    assert "Loss became infinite or NaN at iteration=1" in str(error.value)
    assert f"The last good checkpoint is {last}: continue from it with --resume" in str(error.value)
    saved = torch.load(last, weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
    assert any(not torch.equal(saved[k], weights[k]) for k in weights)  # one step was taken


def test_a_nan_loss_before_any_checkpoint_says_that_none_was_written(tmp_path):
    trainer = trainer_with_nan_loss_at(tmp_path, iteration=0)
    expected = f"No checkpoint was written before it in {tmp_path}"
    with pytest.raises(FloatingPointError, match=expected):
        trainer.train()
