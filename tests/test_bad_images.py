"""Images that cannot be read during training are skipped, counted, logged, and bounded."""

import itertools
import logging

import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.data.common import MapDataset
from detectron2.engine import TrainerBase

from ltm_d2.data.build import build_checked_train_loader
from ltm_d2.data.mapper import SkippedImages, SkippingDatasetMapper
from ltm_d2.data.validation import register_checked_coco
from ltm_d2.engine.hooks import SkippedImageMonitor, TooManyBadImagesError

from support import tiny_cfg
from support.coco_files import spoil_image_file, write_coco

SPOILS = ["truncated", "empty", "not_an_image", "deleted", "wrong_size"]


@pytest.fixture
def dataset_name(tmp_path, request):
    """A checked dataset of four images, registered under the test's name."""
    name = f"test_{request.node.name}"
    register_checked_coco(name, {}, *write_coco(tmp_path))
    return name


@pytest.fixture
def records(dataset_name):
    return DatasetCatalog.get(dataset_name)


def mapper_for(records):
    skipped = SkippedImages([r["file_name"] for r in records])
    return SkippingDatasetMapper(tiny_cfg(), skipped)


def test_a_readable_image_is_mapped_as_by_detectron2(records):
    mapped = mapper_for(records)(records[0])
    assert mapped["image"].shape[0] == 3 and len(mapped["instances"]) == 2


@pytest.mark.parametrize("how", SPOILS)
def test_an_unreadable_image_is_skipped_marked_and_logged(records, caplog, how):
    mapper = mapper_for(records)
    spoil_image_file(records[1]["file_name"], how)
    with caplog.at_level(logging.WARNING, logger="ltm_d2.data.mapper"):
        assert mapper(records[1]) is None
    assert mapper.skipped.count == 1
    assert f"Skipping image {records[1]['file_name']} (image id 2) in training" in caplog.text


def test_an_image_read_again_is_counted_and_logged_once(records, caplog):
    mapper = mapper_for(records)
    spoil_image_file(records[2]["file_name"], "truncated")
    with caplog.at_level(logging.WARNING, logger="ltm_d2.data.mapper"):
        assert mapper(records[2]) is None and mapper(records[2]) is None
    assert mapper.skipped.count == 1 and caplog.text.count("Skipping image") == 1


def test_images_skipped_in_loader_workers_are_counted_in_the_main_process(dataset_name, records):
    spoil_image_file(records[3]["file_name"], "empty")
    cfg = tiny_cfg("DATASETS.TRAIN", (dataset_name,), "DATALOADER.NUM_WORKERS", 1)
    loader = build_checked_train_loader(cfg)
    batches = list(itertools.islice(loader, 2))  # the first epoch: every image is tried
    assert [len(b) for b in batches] == [2, 2]  # batches stay full
    assert all(b["file_name"] != records[3]["file_name"] for b in itertools.chain(*batches))
    assert loader.skipped.count == 1 and loader.skipped.num_images == 4


class MappingTrainer(TrainerBase):
    """A training loop whose step maps the next record: Detectron2's hooks and EventStorage
    around real skips, without a model."""

    def __init__(self, mapper, records):
        super().__init__()
        self.mapper = mapper
        self.records = itertools.cycle(records)

    def run_step(self):
        self.mapper(next(self.records))


def train_with_monitor(records, spoiled, max_fraction, iterations):
    for i in spoiled:
        spoil_image_file(records[i]["file_name"], "truncated")
    mapper = mapper_for(records)
    trainer = MappingTrainer(mapper, records)
    trainer.register_hooks([SkippedImageMonitor(mapper.skipped, max_fraction)])
    trainer.train(0, iterations)
    return trainer


def test_the_number_of_skipped_images_is_an_event_storage_scalar(records):
    trainer = train_with_monitor(records, spoiled=[2], max_fraction=0.5, iterations=6)
    history = trainer.storage.history("data/skipped_images").values()
    assert [count for count, _ in history] == [0, 0, 1, 1, 1, 1]


def test_training_stops_once_more_than_the_allowed_share_is_bad(records):
    expected = r"2 of the 4 training images could not be read by iteration 2 \(50.00%\)"
    with pytest.raises(TooManyBadImagesError, match=expected):
        train_with_monitor(records, spoiled=[0, 2], max_fraction=0.25, iterations=8)


def test_a_share_of_zero_stops_at_the_first_bad_image(records):
    with pytest.raises(TooManyBadImagesError, match="MAX_BAD_IMAGE_FRACTION = 0.0"):
        train_with_monitor(records, spoiled=[3], max_fraction=0.0, iterations=8)


def test_the_end_of_training_logs_how_many_images_were_skipped(records, caplog):
    with caplog.at_level(logging.WARNING, logger="ltm_d2.engine.hooks"):
        train_with_monitor(records, spoiled=[1], max_fraction=0.5, iterations=4)
    assert "1 of the 4 training images were skipped as unreadable" in caplog.text


@pytest.mark.slow
def test_an_image_skipped_in_a_spawned_worker_is_counted_by_the_main_process(records):
    mapper = mapper_for(records)
    spoil_image_file(records[1]["file_name"], "truncated")
    loader = torch.utils.data.DataLoader(
        MapDataset(records, mapper),
        batch_size=None,
        num_workers=1,
        multiprocessing_context="spawn",  # as on macOS, and on Linux from Python 3.14
    )
    assert len(list(loader)) == len(records)  # the skipped image replaced by another
    assert mapper.skipped.count == 1
