"""
The training data loader: Detectron2's, after the datasets are checked, skipping unreadable
images, with a data stream that a resumed run continues where the interrupted one was.
"""

import itertools
import logging
import time
from typing import Iterator, List, Optional, Sequence

from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from ..tiling.cutting import tile_records
from ..tiling.reading import ImageTooLargeError, check_image_pixels
from .mapper import UNREADABLE, MarkingTestDatasetMapper, SkippedImages, SkippingDatasetMapper
from .shapes import SPLITS, ensure_split
from .user_datasets import is_dataset_spec
from .validation import DatasetError, raise_if_any, validate_training_datasets

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(TrainingSampler):
    """
    Detectron2's TrainingSampler (the same infinite stream of shuffled indices, shared out between
    the workers), whose stream starts at index `start` instead of 0: a run resumed after N images
    of the global stream sets `start = N` and gets the images the interrupted run would have got.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        stream = self._infinite_indices()
        yield from itertools.islice(stream, self.start + self._rank, None, self._world_size)


class TrainLoader:
    """
    Detectron2's training data loader (an iterable of batches), the images it skipped as
    unreadable, and the sampler whose position a resumed run sets.

    Every iteration takes exactly IMS_PER_BATCH images of the sampler's stream when
    DATALOADER.NUM_WORKERS is 0 and all images fall into one aspect-ratio group (or grouping is
    off); a resumed run then sees the same batches as an uninterrupted one. Otherwise it
    continues at the same place of the stream, but the few images that loader workers or
    aspect-ratio groups held at the checkpoint may be taken in another order.
    """

    def __init__(self, loader, skipped: SkippedImages, sampler: Optional[ResumableTrainingSampler]):
        self.loader = loader
        self.skipped = skipped
        self.sampler = sampler

    def __iter__(self):
        return iter(self.loader)

    def skip(self, num_images: int) -> None:
        """Start the stream after `num_images` images (of all workers together); before
        iterating."""
        if self.sampler is not None:
            self.sampler.start = num_images
        elif num_images:
            logger.warning(
                "DATALOADER.SAMPLER_TRAIN is not TrainingSampler: the resumed run starts its data "
                "stream from the beginning."
            )


def check_training_datasets(cfg) -> None:
    """:func:`check_datasets` of cfg.DATASETS.TRAIN and TEST, for MODEL.RETINANET.NUM_CLASSES;
    then, without tiling, every training image over PIL's pixel limit listed in one error."""
    check_datasets(cfg.DATASETS.TRAIN, cfg.DATASETS.TEST, cfg.MODEL.RETINANET.NUM_CLASSES)
    if cfg.INPUT.TILING.SIZE > 0:
        return
    for name in cfg.DATASETS.TRAIN:
        problems = []
        for record in DatasetCatalog.get(name):
            try:
                check_image_pixels(record, tiling=False)
            except ImageTooLargeError as e:
                problems.append(str(e))
        raise_if_any(name, problems)


def check_datasets(
    train_names: Sequence[str],
    test_names: Sequence[str],
    num_classes: int,
    train_key: str = "DATASETS.TRAIN",
) -> None:
    """
    Check the annotation files of the training datasets (:func:`validate_training_datasets`; the
    bundled dataset is generated first) and the classes of a user's test datasets: a DatasetError
    names what is wrong. `train_key` names where the config lists the training datasets.
    """
    if not train_names:
        raise DatasetError(
            f"{train_key} is empty: name the training data, e.g. "
            f"""{train_key} '("voc:data/train",)' (formats coco:, voc:, csv:; docs/own_data.md)"""
        )
    for name in train_names:
        if name in SPLITS:
            ensure_split(name)  # the bundled dataset is generated on first use
    validate_training_datasets(train_names, num_classes)
    for name in test_names:
        if is_dataset_spec(name):
            DatasetCatalog.get(name)  # its classes are checked now, not after training


def warn_of_crowded_test_images(cfg) -> None:
    """Warn where a test image of cfg.DATASETS.TEST holds more objects than the model keeps
    detections (TEST.DETECTIONS_PER_IMAGE), which bounds its recall and AP."""
    for name in cfg.DATASETS.TEST:
        if name in SPLITS:
            ensure_split(name)
        most = max((len(r.get("annotations", ())) for r in DatasetCatalog.get(name)), default=0)
        if most > cfg.TEST.DETECTIONS_PER_IMAGE:
            logger.warning(
                f"{name}: an image has {most} objects, but the model keeps at most "
                f"TEST.DETECTIONS_PER_IMAGE {cfg.TEST.DETECTIONS_PER_IMAGE} detections per image, "
                "which bounds its recall and AP: raise it"
            )


def check_test_images(cfg, progress_seconds: float = 30.0) -> None:
    """
    Read every image of cfg.DATASETS.TEST as the evaluation after training will read it (the
    test mapper, :class:`MarkingTestDatasetMapper`, without resizing), so that an image it cannot
    use stops the run before training instead of after: a DatasetError lists each, with why.
    Progress and the time left are logged every `progress_seconds`.
    """
    mapper = MarkingTestDatasetMapper(cfg, augmentations=[])
    problems = []
    for name in cfg.DATASETS.TEST:
        if name in SPLITS:
            ensure_split(name)
        records = DatasetCatalog.get(name)
        loader = build_detection_test_loader(
            records, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS
        )
        start = last = time.perf_counter()
        for done, (mapped,) in enumerate(loader, start=1):
            if UNREADABLE in mapped:
                problems.append(
                    f"{name}: image {mapped['file_name']} (image id {mapped['image_id']}): "
                    f"{mapped[UNREADABLE]}"
                )
            now = time.perf_counter()
            if now - last > progress_seconds:
                left = (now - start) / done * (len(records) - done)
                logger.info(
                    f"Reading the test images of {name}: {done}/{len(records)}, {left:.0f} s left"
                )
                last = now
    raise_if_any(
        "the test images, read before training as the evaluation after it will read them "
        "(fix or remove them from the test set)",
        problems,
    )


def build_checked_train_loader(cfg) -> TrainLoader:
    """
    Check the annotation files of cfg.DATASETS.TRAIN (:func:`validate_training_datasets`) and the
    classes of a user's test datasets (errors before any training), with INPUT.TILING.SIZE > 0
    cut images larger than a tile into tiles (:func:`tile_records`;
    DATALOADER.FILTER_EMPTY_ANNOTATIONS then drops the tiles without objects), then build
    Detectron2's training loader of DATALOADER.* and SOLVER.IMS_PER_BATCH
    (:func:`resumable_train_loader`).
    """
    check_training_datasets(cfg)
    filter_empty = cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=filter_empty)
    tiling = cfg.INPUT.TILING
    if tiling.SIZE > 0:
        dataset = tile_records(dataset, tiling.SIZE, tiling.OVERLAP, tiling.MIN_VISIBLE)
        if filter_empty:
            dataset = filter_images_with_only_crowd_annotations(dataset)  # tiles without objects
    skipped = skipped_images_of(dataset)
    kwargs = build_detection_train_loader.from_config(
        cfg, SkippingDatasetMapper(cfg, skipped), dataset=dataset
    )
    return resumable_train_loader(skipped, seed=cfg.SEED, **kwargs)


def skipped_images_of(dataset: List[dict]) -> SkippedImages:
    """The (empty) set of the images of `dataset` found unreadable, for its mapper to mark."""
    return SkippedImages([record["file_name"] for record in dataset])


def resumable_train_loader(
    skipped: SkippedImages,
    *,
    dataset,
    mapper,
    sampler=None,
    seed: int = -1,
    **kwargs,
) -> TrainLoader:
    """
    Detectron2's training loader (:func:`build_detection_train_loader` of `dataset`, `mapper`
    and its other `kwargs`), whose mapper marks unreadable images in `skipped`, with a
    ResumableTrainingSampler in place of a TrainingSampler (or of none: same seed) and the
    DataLoader's own generator seeded from `seed` (when >= 0, one per worker), so that creating
    the loader draws nothing from torch's global generator.
    """
    if sampler is None:
        sampler = TrainingSampler(len(dataset))
    resumable = None
    if type(sampler) is TrainingSampler:
        resumable = sampler = ResumableTrainingSampler(len(dataset), seed=sampler._seed)
    seed = seed + comm.get_rank() if seed >= 0 else None
    loader = build_detection_train_loader(
        dataset=dataset, mapper=mapper, sampler=sampler, seed=seed, **kwargs
    )
    return TrainLoader(loader, skipped, resumable)
