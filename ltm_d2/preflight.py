"""Checks of a run's files that need no model, made before any model is built."""

import os
import tempfile

from .data.augmentation import check_augmentations
from .data.build import check_test_images, check_training_datasets, warn_of_crowded_test_images
from .engine.precision import GPU_PRECISIONS
from .errors import UserError


def check_weights_file(weights: str) -> None:
    """MODEL.WEIGHTS, when it is a local path, names a file (URLs and model-zoo names are fetched
    later; "" starts from scratch)."""
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise UserError(
            f"MODEL.WEIGHTS {weights}: no such file. Give the path of a checkpoint (e.g. "
            'OUTPUT_DIR/model_final.pth of a finished run), or MODEL.WEIGHTS "" to start from '
            "scratch."
        )


def check_output_dir(output_dir: str) -> None:
    """OUTPUT_DIR exists or can be made, and a file can be written in it."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise UserError(
            f"OUTPUT_DIR {output_dir}: cannot write there ({e.strerror}). Give a folder you may "
            "write to: ... OUTPUT_DIR path/to/folder."
        ) from e


def check_dense_metrics(cfg) -> None:
    """TEST.DENSE_METRICS, when enabled, has an IoU threshold in (0, 1] and a score threshold in
    [0, 1]."""
    dense = cfg.TEST.DENSE_METRICS
    if not dense.ENABLED:
        return
    if not 0 < dense.IOU_THRESHOLD <= 1:
        raise UserError(
            f"TEST.DENSE_METRICS.IOU_THRESHOLD {dense.IOU_THRESHOLD}: must be in (0, 1], the "
            "smallest IoU at which a detection finds an object (e.g. 0.4, DeepForest's, or 0.5)."
        )
    if not 0 <= dense.SCORE_THRESHOLD <= 1:
        raise UserError(
            f"TEST.DENSE_METRICS.SCORE_THRESHOLD {dense.SCORE_THRESHOLD}: must be in [0, 1], the "
            "smallest score of a detection that counts (e.g. 0.5)."
        )


def check_run(cfg, training: bool, resume: bool = False) -> None:
    """
    The checks of a training or evaluation run of `cfg`: the output folder, the thresholds of
    TEST.DENSE_METRICS (:func:`check_dense_metrics`), the weights (not read when --resume finds a
    checkpoint in OUTPUT_DIR to continue from), test images holding more objects than the
    detections kept (a warning) and, for training, the augmentations
    (:func:`check_augmentations`), the training datasets
    (:func:`check_training_datasets`), the test images (:func:`check_test_images`: an image the
    evaluation after training cannot read stops the run now) and the mixed precision asked for.
    """
    check_output_dir(cfg.OUTPUT_DIR)
    check_dense_metrics(cfg)
    if not (resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))):
        check_weights_file(cfg.MODEL.WEIGHTS)
    warn_of_crowded_test_images(cfg)
    if training:
        if cfg.SOLVER.MAX_ITER < 1:
            raise UserError(
                f"SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER}: expected at least 1 iteration to train "
                "(--eval-only evaluates MODEL.WEIGHTS without training)."
            )
        check_augmentations(cfg)
        check_training_datasets(cfg)
        check_test_images(cfg)
        if cfg.SOLVER.AMP.PRECISION not in GPU_PRECISIONS:
            raise UserError(
                f"SOLVER.AMP.PRECISION {cfg.SOLVER.AMP.PRECISION!r}: must be one of "
                f"{', '.join(GPU_PRECISIONS)}."
            )
