"""
A test image that cannot be read stops a training run before training, naming it; at evaluation
it is skipped with a warning and left out of the AP and the dense-object metrics, never a
traceback after training.
"""

import logging

import pytest

from detectron2.data import DatasetCatalog

from ltm_d2 import load_config
from ltm_d2.data import DatasetError
from ltm_d2.data.validation import register_checked_coco
from ltm_d2.engine import Trainer
from ltm_d2.preflight import check_run

from support import TINY_CONFIG, GroundTruthModel
from support.coco_files import spoil_image_file, write_coco
from support.user_data import make_images, write_csv, write_voc

SPOILS = ["truncated", "empty", "not_an_image", "deleted", "wrong_size"]


def config(tmp_path, train, test, *opts):
    return load_config(
        TINY_CONFIG,
        [
            "MODEL.RETINANET.NUM_CLASSES",
            "0",
            "DATASETS.TRAIN",
            f"('{train}',)",
            "DATASETS.TEST",
            f"('{test}',)",
            "OUTPUT_DIR",
            str(tmp_path / "output"),
            *opts,
        ],
    )


@pytest.mark.parametrize("how", SPOILS)
def test_an_unusable_test_image_stops_a_training_run_before_training(tmp_path, request, how):
    name = f"test_{request.node.name}"
    register_checked_coco(name, {}, *write_coco(tmp_path))
    train = write_csv(str(tmp_path), make_images(2))
    cfg = config(tmp_path, f"csv:{train}", name)
    spoil_image_file(DatasetCatalog.get(name)[1]["file_name"], how)
    with pytest.raises(DatasetError, match=r"the test images, read before training") as error:
        check_run(cfg, training=True)
    assert DatasetCatalog.get(name)[1]["file_name"] in str(error.value)
    assert "1 problem(s)" in str(error.value)


def test_readable_test_images_pass_the_check_before_training(tmp_path):
    path = write_csv(str(tmp_path), make_images(3))
    check_run(config(tmp_path, f"csv:{path}", f"csv:{path}"), training=True)


@pytest.mark.parametrize("fmt", ["csv", "voc"])
def test_an_unreadable_test_image_is_left_out_of_the_ap_with_a_warning(tmp_path, caplog, fmt):
    path = {"csv": write_csv, "voc": write_voc}[fmt](str(tmp_path), make_images(4))
    cfg = config(tmp_path, f"{fmt}:{path}", f"{fmt}:{path}")
    records = DatasetCatalog.get(f"{fmt}:{path}")
    spoil_image_file(records[2]["file_name"], "truncated")
    with caplog.at_level(logging.WARNING):
        results = Trainer.test(cfg, GroundTruthModel(records))
    assert results["bbox"]["AP50"] == pytest.approx(100.0)  # the skipped image's objects not missed
    assert f"Skipping test image {records[2]['file_name']}" in caplog.text
    assert "1 test image(s) could not be read and were left out" in caplog.text


@pytest.mark.parametrize("fmt", ["csv", "voc"])
def test_an_unreadable_test_image_is_left_out_of_the_dense_metrics(tmp_path, fmt):
    path = {"csv": write_csv, "voc": write_voc}[fmt](str(tmp_path), make_images(4))
    cfg = config(tmp_path, f"{fmt}:{path}", f"{fmt}:{path}", "TEST.DENSE_METRICS.ENABLED", "True")
    records = DatasetCatalog.get(f"{fmt}:{path}")
    spoil_image_file(records[2]["file_name"], "truncated")
    dense = Trainer.test(cfg, GroundTruthModel(records))["dense"]
    read_objects = sum(len(r["annotations"]) for i, r in enumerate(records) if i != 2)
    assert (dense["TP"], dense["FP"], dense["FN"]) == (read_objects, 0, 0)
    assert dense["count_MAE"] == 0.0 and dense["AP50"] == pytest.approx(100.0)


def test_a_class_name_with_a_slash_is_evaluated_by_the_voc_evaluator(tmp_path):
    images = make_images(3)
    images = [
        (image, [(*b[:4], b[4].replace("disc", "disc/ball")) for b in boxes])
        for image, boxes in images
    ]
    path = write_voc(str(tmp_path), images)
    cfg = config(tmp_path, f"voc:{path}", f"voc:{path}")
    assert "disc/ball" in cfg.DATASETS.CLASS_NAMES
    results = Trainer.test(cfg, GroundTruthModel(DatasetCatalog.get(f"voc:{path}")))
    assert results["bbox"]["AP50"] == pytest.approx(100.0)
