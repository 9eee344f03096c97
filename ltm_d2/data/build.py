"""The training data loader: Detectron2's, after the datasets are checked, skipping bad images."""
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts

from .mapper import SkippedImages, SkippingDatasetMapper
from .shapes import SPLITS, ensure_split
from .validation import validate_training_datasets


class CheckedTrainLoader:
    """Detectron2's training data loader (an iterable of batches) and the images it skipped."""

    def __init__(self, loader, skipped: SkippedImages):
        self.loader = loader
        self.skipped = skipped

    def __iter__(self):
        return iter(self.loader)


def build_checked_train_loader(cfg) -> CheckedTrainLoader:
    """
    Check the annotation files of cfg.DATASETS.TRAIN (:func:`validate_training_datasets`; errors
    before any training), then build Detectron2's training loader with a mapper that skips and
    counts the images it cannot read (:class:`SkippingDatasetMapper`).
    """
    for name in cfg.DATASETS.TRAIN:
        if name in SPLITS:
            ensure_split(name)  # the bundled dataset is generated on first use
    validate_training_datasets(cfg.DATASETS.TRAIN, cfg.MODEL.RETINANET.NUM_CLASSES)
    dataset = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    skipped = SkippedImages([record["file_name"] for record in dataset])
    loader = build_detection_train_loader(
        cfg, mapper=SkippingDatasetMapper(cfg, skipped), dataset=dataset
    )
    return CheckedTrainLoader(loader, skipped)
