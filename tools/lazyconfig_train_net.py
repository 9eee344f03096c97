#!/usr/bin/env python
r"""
Train or evaluate a detector of a LazyConfig (a Python config, configs/**/*.py), in the shape of
Detectron2's tools/lazyconfig_train_net.py:

    python tools/lazyconfig_train_net.py --config-file configs/COCO-Detection/ltm_R_50_FPN_1x.py \
        --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file ... --eval-only \
        train.init_checkpoint=output/model_final.pth

Trailing KEY=VALUE pairs override the config (train.max_iter=1000). Beyond Detectron2's script it
clips the global gradient norm (train.clip_grad), writes checkpoints atomically and reads them
without running code, resumes exactly (the random state and the data stream), reads datasets named
coco:, voc: or csv: PATH, skips unreadable training images, evaluates by the dataset's type, runs
on CPU workers and in the precision the hardware gives, and ends on a user's mistake with a
message. Tiling (INPUT.TILING) is of train_net.py and the yacs configs only.
"""

import copy
import logging
import os
import sys

import torch
from omegaconf.errors import OmegaConfBaseException

from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.engine import default_argument_parser, default_setup, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.checkpoint.fine_tuning import HeadAdaptation
from ltm_d2.data.build import check_datasets, resumable_train_loader, skipped_images_of
from ltm_d2.data.mapper import SkippingDatasetMapper
from ltm_d2.data.user_datasets import register_user_datasets
from ltm_d2.engine import clip_global_norm, create_ddp_model
from ltm_d2.engine.hooks import SkippedImageMonitor
from ltm_d2.engine.launch import launch, share_cpu_cores
from ltm_d2.engine.precision import choose_precision
from ltm_d2.engine.resume import RandomStateHook
from ltm_d2.errors import INTERRUPTED_EXIT, UserError, UserErrorTracebackFilter, run_main
from ltm_d2.evaluation import SkippingUnreadableImages, WithCandidatesBeforeNMS
from ltm_d2.tiling.reading import ImageTooLargeError, check_image_pixels

logger = logging.getLogger("ltm_d2")


def dataset_names(names) -> list:
    """A get_detection_dataset_dicts `names` (one name or several) as a list."""
    return [names] if isinstance(names, str) else list(names)


def load_lazy_config(config_file: str, opts):
    """
    The LazyConfig of `config_file` with the KEY=VALUE overrides `opts`, errors as messages. A
    config asking for CUDA on a machine without a GPU runs on the CPU. The datasets it names as
    `format:path` are registered, dataloader.class_names and model.num_classes set from them
    (as load_config does for a yacs config).
    """
    if not os.path.isfile(config_file):
        raise UserError(f"{config_file}: no such config file.")
    try:
        cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), opts)
    except (OmegaConfBaseException, KeyError, ValueError) as e:
        raise UserError(f"{config_file} with overrides {' '.join(opts)}: {e}") from e
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        cfg.train.device = "cpu"
    classes = register_user_datasets(
        [*dataset_names(cfg.dataloader.train.dataset.names), *test_names(cfg)],
        cfg.dataloader.get("class_names", ()),
        cfg.model.num_classes,
        class_names_key="dataloader.class_names",
        num_classes_key="model.num_classes",
    )
    if classes is not None:
        cfg.dataloader.class_names = classes
        cfg.model.num_classes = len(classes)
    return cfg


def test_names(cfg) -> list:
    return dataset_names(cfg.dataloader.test.dataset.names) if "test" in cfg.dataloader else []


def build_train_loader(cfg):
    """
    The training loader of cfg.dataloader.train, Detectron2's build_detection_train_loader of a
    get_detection_dataset_dicts dataset, as train_net.py builds it: the datasets checked first,
    a DatasetMapper that skips unreadable images (counted in the loader's `skipped`), and a data
    stream that a resumed run continues (ltm_d2/data/build.py).
    """
    train = cfg.dataloader.train
    if train._target_ is not build_detection_train_loader or (
        train.dataset._target_ is not get_detection_dataset_dicts
    ):
        raise UserError(
            "dataloader.train: expected Detectron2's build_detection_train_loader of a "
            "get_detection_dataset_dicts dataset, as in configs/common/ltm.py."
        )
    check_datasets(
        dataset_names(train.dataset.names),
        test_names(cfg),
        cfg.model.num_classes,
        train_key="dataloader.train.dataset.names",
    )
    dataset = instantiate(train.dataset)
    for record in dataset:
        try:
            check_image_pixels(record, tiling=False)
        except ImageTooLargeError as e:
            raise UserError(
                f"{e}. Tiling is of the yacs configs only: train on tiles with train_net.py and "
                "a config of configs/Own-Data/ (docs/own_data.md)."
            ) from e
    skipped = skipped_images_of(dataset)
    mapper = copy.deepcopy(train.mapper)
    if mapper._target_ is DatasetMapper:
        mapper._target_ = SkippingDatasetMapper
        mapper.skipped = skipped
    others = {k: v for k, v in train.items() if k not in ("_target_", "dataset", "mapper")}
    return resumable_train_loader(
        skipped,
        dataset=dataset,
        mapper=instantiate(mapper),
        seed=cfg.train.get("seed", -1),
        **{k: instantiate(v) for k, v in others.items()},
    )


def build_optimizer(cfg, model):
    """The optimizer of cfg.optimizer for `model`, clipping the norm of all gradients together
    with train.clip_grad.params (max_norm, norm_type) when train.clip_grad.enabled."""
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_grad")
    if clip is not None and clip.enabled:
        optimizer = clip_global_norm(optimizer, **clip.params)
    return optimizer


def do_test(cfg, model):
    """Evaluate `model` on cfg.dataloader.test with cfg.dataloader.evaluator, leaving out the test
    images that cannot be read, each named in a warning."""
    if "evaluator" not in cfg.dataloader:
        return {}
    evaluator = instantiate(cfg.dataloader.evaluator)  # generates the bundled dataset first
    if cfg.dataloader.evaluator.get("nms_recall"):
        model = WithCandidatesBeforeNMS(model)
    model = SkippingUnreadableImages(model)
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), evaluator)
    if comm.is_main_process():
        print_csv_format(results)
    if model.skipped:
        logger.warning(
            f"{len(model.skipped)} test image(s) could not be read and were left out of the "
            "evaluation; each is named in a 'Skipping test image' warning above."
        )
    return results


def do_train(args, cfg):
    """
    Train as Detectron2's script does, with the optimizer's global-norm clipping of
    train.clip_grad, the training step of the precision the hardware gives for train.amp, the
    safe checkpointer, and the random state and data stream of an interrupted run on --resume.
    """
    model = instantiate(cfg.model)
    logger.info(f"Model:\n{model}")
    model.to(cfg.train.device)
    optimizer = build_optimizer(cfg, model)
    train_loader = build_train_loader(cfg)
    amp = cfg.train.amp
    precision = choose_precision(
        amp.enabled,
        amp.get("precision", "float16"),
        cfg.train.device,
        keys=("train.amp.enabled", "train.amp.precision"),
    )
    logger.info(precision.describe())
    ddp = cfg.train.ddp
    model = create_ddp_model(model, ddp.broadcast_buffers, ddp.find_unused_parameters)
    trainer = precision.trainer(model, train_loader, optimizer)
    checkpointer = lazy_checkpointer(cfg, model, trainer=trainer)
    main_process = comm.is_main_process()
    trainer.register_hooks(
        [
            SkippedImageMonitor(
                train_loader.skipped, cfg.train.get("max_bad_image_fraction", 0.01)
            ),
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if main_process
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if main_process
            else None,
            RandomStateHook(),
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # The checkpoint holds the iteration that finished: training goes on at the next one, with
    # the images after those already trained on.
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    train_loader.skip(start_iter * cfg.dataloader.train.total_batch_size)
    trainer.train(start_iter, cfg.train.max_iter)


def lazy_checkpointer(cfg, model, **checkpointables) -> SafeCheckpointer:
    """The run's checkpointer into train.output_dir; weights loaded from train.init_checkpoint have
    their head adapted to the model (a RetinaNet head of other box-regression weights, given by
    train.init_checkpoint_bbox_reg_weights where the file records none, or of another class
    count), as MODEL.WEIGHTS in a yacs config."""
    return SafeCheckpointer(
        model,
        cfg.train.output_dir,
        head_adaptation=HeadAdaptation.from_lazy_config(cfg),
        **checkpointables,
    )


def main(args):
    cfg = load_lazy_config(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="ltm_d2")
    logging.getLogger("detectron2.engine.train_loop").addFilter(UserErrorTracebackFilter())
    if cfg.train.device == "cpu":
        logger.info("No GPU available: running on the CPU.")
        share_cpu_cores()
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        lazy_checkpointer(cfg, model).resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
        return do_test(cfg, model)
    do_train(args, cfg)


def start(args):
    """The config read once here (its errors as messages before any worker starts), then the
    workers."""
    load_lazy_config(args.config_file, args.opts)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    try:
        run_main(start, args)
    except KeyboardInterrupt:
        print("Interrupted: continue from the last checkpoint with --resume.", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
