"""The project's trainer: Detectron2's DefaultTrainer, runnable on CPU workers too."""

import logging
import os
import weakref
from collections import OrderedDict

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.solver.build import _generate_optimizer_class_with_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import SafeCheckpointer
from ..data.build import build_checked_train_loader
from ..evaluation import SkippingUnreadableImages, WithCandidatesBeforeNMS, build_evaluator
from ..modeling.test_time_augmentation import DenseDetectorWithTTA
from ..tiling.prediction import TiledDetector, build_test_mapper
from .hooks import SkippedImageMonitor
from .precision import training_precision
from .resume import RandomStateHook


def create_ddp_model(
    model: torch.nn.Module, broadcast_buffers: bool = False, find_unused_parameters: bool = False
) -> torch.nn.Module:
    """
    Wrap `model` in DistributedDataParallel (with these two of its options) when there are
    several workers. Unlike Detectron2's helper of the same name, CPU workers (gloo) are
    supported: DDP refuses `device_ids` for a module on the CPU, so they are only passed for a
    model on a GPU.
    """
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(
        model,
        device_ids=device_ids,
        broadcast_buffers=broadcast_buffers,
        find_unused_parameters=find_unused_parameters,
    )


def scale_to_workers(cfg, num_workers: int):
    """
    Detectron2's DefaultTrainer.auto_scale_workers (batch, LR and schedule of a config defined
    for SOLVER.REFERENCE_WORLD_SIZE workers, rescaled to `num_workers`), with an error that says
    what to do where Detectron2 only asserts.
    """
    reference, batch = cfg.SOLVER.REFERENCE_WORLD_SIZE, cfg.SOLVER.IMS_PER_BATCH
    if reference and batch % reference:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH {batch} is not a multiple of SOLVER.REFERENCE_WORLD_SIZE "
            f"{reference}: the config gives its batch for {reference} GPUs, and it is rescaled to "
            f"the {num_workers} in use. Give a multiple of {reference}, or add "
            "SOLVER.REFERENCE_WORLD_SIZE 0 to train with exactly SOLVER.IMS_PER_BATCH images per "
            "iteration on any number of GPUs."
        )
    return DefaultTrainer.auto_scale_workers(cfg, num_workers)


def clip_global_norm(optimizer, max_norm: float, norm_type: float = 2.0):
    """
    `optimizer`, whose step first clips the `norm_type` norm of all its gradients together to
    `max_norm`, as the authors' code does (Detectron2's SOLVER.CLIP_GRADIENTS clips each parameter
    separately). The recipe of LTM and LTM-AF (docs/recipes.md); SOLVER.CLIP_GRADIENTS with
    CLIP_TYPE "full_model" in a yacs config, train.clip_grad in a LazyConfig.
    """

    def clip(params):
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)

    optimizer.__class__ = _generate_optimizer_class_with_gradient_clipping(
        type(optimizer), global_clipper=clip
    )
    return optimizer


class Trainer(DefaultTrainer):
    """DefaultTrainer that trains on CPU workers too, in the precision the hardware gives
    (engine/precision.py), evaluates with COCOEvaluator, generates the bundled dataset on first
    use, checks the training data, writes checkpoints atomically, reads them without running code,
    resumes with the data order and random state of the interrupted run (engine/resume.py) and
    names the last checkpoint when the loss becomes NaN."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__, with the CPU-capable create_ddp_model above and the training
        # step of the precision chosen for the device.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = scale_to_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        precision = training_precision(cfg, next(model.parameters()).device)
        logging.getLogger("ltm_d2").info(precision.describe())
        model = create_ddp_model(model)
        self._trainer = precision.trainer(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SafeCheckpointer(
            model, cfg.OUTPUT_DIR, cfg=cfg, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """DefaultTrainer's, then the data stream continues after the images already trained on."""
        super().resume_or_load(resume=resume)
        self.data_loader.skip(self.start_iter * self.cfg.SOLVER.IMS_PER_BATCH)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """
        Detectron2's optimizer, plus SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model": the L2 norm of
        all gradients together is clipped to CLIP_VALUE (:func:`clip_global_norm`).
        """
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
            return super().build_optimizer(cfg, model)
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
        return clip_global_norm(
            super().build_optimizer(cfg, model), clip.CLIP_VALUE, clip.NORM_TYPE
        )

    @classmethod
    def build_train_loader(cls, cfg):
        """
        Detectron2's loader, after the datasets are checked; it skips unreadable images and a
        resumed run continues its data stream (data/build.py).
        """
        return build_checked_train_loader(cfg)

    def run_step(self):
        """DefaultTrainer.run_step; on a non-finite loss, names the last checkpoint too."""
        try:
            super().run_step()
        except FloatingPointError as e:
            if self.checkpointer.has_checkpoint():
                last = self.checkpointer.get_checkpoint_file()
                note = f"The last good checkpoint is {last}: continue from it with --resume."
            else:
                note = f"No checkpoint was written before it in {self.cfg.OUTPUT_DIR}."
            raise FloatingPointError(f"{e}\n{note}") from e

    def build_hooks(self):
        """
        DefaultTrainer's hooks, with one that counts the skipped images first, Detectron2's
        BestCheckpointer after the evaluation with TEST.BEST_CHECKPOINT.METRIC, and one that puts
        the random state into the checkpoints last.
        """
        monitor = SkippedImageMonitor(
            self.data_loader.skipped, self.cfg.DATALOADER.MAX_BAD_IMAGE_FRACTION
        )
        best = []
        if self.cfg.TEST.BEST_CHECKPOINT.METRIC and self.cfg.TEST.EVAL_PERIOD > 0:
            best = [
                hooks.BestCheckpointer(
                    self.cfg.TEST.EVAL_PERIOD,
                    self.checkpointer,
                    self.cfg.TEST.BEST_CHECKPOINT.METRIC,
                    self.cfg.TEST.BEST_CHECKPOINT.MODE,
                )
            ]
        return [monitor, *super().build_hooks(), *best, RandomStateHook()]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """
        ltm_d2/evaluation/build.py :func:`build_evaluator` of the dataset, into `output_folder`
        (default OUTPUT_DIR/inference), keeping TEST.DETECTIONS_PER_IMAGE detections per image,
        with the dense-object figures when TEST.DENSE_METRICS.ENABLED and NMS recall when
        TEST.NMS_RECALL.
        """
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        dense = cfg.TEST.DENSE_METRICS
        return build_evaluator(
            dataset_name,
            output_folder,
            cfg.TEST.DETECTIONS_PER_IMAGE,
            cfg.TEST.NMS_RECALL,
            (dense.IOU_THRESHOLD, dense.SCORE_THRESHOLD) if dense.ENABLED else None,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """
        Detectron2's test loader, whose mapper marks the images it cannot read instead of ending
        the evaluation (:func:`build_test_mapper`); with INPUT.TILING.SIZE > 0, it does not
        resize the images: :class:`TiledDetector` cuts the tiles from the original image and
        resizes each.
        """
        return build_detection_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """
        DefaultTrainer.test, leaving out the test images that cannot be read, each named in a
        warning (:class:`SkippingUnreadableImages`); with TEST.NMS_RECALL, the model also returns
        its candidates before NMS, for :class:`NMSRecallEvaluator`. With INPUT.TILING.SIZE > 0,
        images larger than a tile are evaluated whole, detected tile by tile
        (:class:`TiledDetector`); NMS recall, which is of the model's own NMS on whole images, is
        then not measured.
        """
        if cfg.INPUT.TILING.SIZE > 0:
            if cfg.TEST.NMS_RECALL:
                logging.getLogger("ltm_d2").warning("TEST.NMS_RECALL is not measured with tiling.")
                cfg = cfg.clone()
                cfg.defrost()
                cfg.TEST.NMS_RECALL = False
            if not isinstance(model, TiledDetector):
                model = TiledDetector(cfg, model)
        elif cfg.TEST.NMS_RECALL:
            model = WithCandidatesBeforeNMS(model)
        model = SkippingUnreadableImages(model)
        results = super().test(cfg, model, evaluators)
        if model.skipped:
            logging.getLogger("ltm_d2").warning(
                f"{len(model.skipped)} test image(s) could not be read and were left out of the "
                "evaluation; each is named in a 'Skipping test image' warning above."
            )
        return results

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """
        Evaluate `model` with multi-scale and flip testing (TEST.AUG.*) on every test dataset;
        evaluator outputs go to OUTPUT_DIR/inference_TTA and result keys end in "_TTA". NMS recall
        is of the plain model's NMS, so it is not measured here. With tiling, each tile is tested
        with the augmentations.
        """
        cfg = cfg.clone()
        cfg.defrost()
        cfg.TEST.NMS_RECALL = False
        logging.getLogger("ltm_d2").info("Running inference with test-time augmentation ...")
        model = DenseDetectorWithTTA(cfg, model)
        if cfg.INPUT.TILING.SIZE > 0:
            # Tiles of the original image; DenseDetectorWithTTA resizes them to TEST.AUG.MIN_SIZES.
            model = TiledDetector(cfg, model, resize=False)
        evaluators = [
            cls.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, model, evaluators)
        return OrderedDict((name + "_TTA", result) for name, result in results.items())
