"""A user's own dataset, trained and evaluated with commands only: train_net.py, demo.py and the
tools, given the data by format and path."""

import json
import os

import pytest
import yaml

from support import run
from support.user_data import make_images, write_coco, write_csv, write_voc

WRITERS = {"coco": write_coco, "voc": write_voc, "csv": write_csv}


def own_dataset(folder, fmt):
    """Training and validation data of one format in `folder`: the DATASETS overrides."""
    train = WRITERS[fmt](str(folder), make_images(6, seed=0), "train")
    val = WRITERS[fmt](str(folder), make_images(3, seed=1), "val")
    return [
        "DATASETS.TRAIN",
        f'("{fmt}:{train}",)',
        "DATASETS.TEST",
        f'("{fmt}:{val}",)',
        "MODEL.RETINANET.NUM_CLASSES",
        "0",
    ]


@pytest.mark.parametrize(
    "fmt,metric",
    [
        ("coco", "AP,AP50,AP75,APs,APm,APl"),
        ("voc", "AP,AP50,AP75"),
        ("csv", "AP,AP50,AP75,APs,APm,APl"),
    ],
)
@pytest.mark.slow
def test_each_format_trains_keeps_the_best_checkpoint_and_evaluates_it(tmp_path, fmt, metric):
    data = own_dataset(tmp_path / "data", fmt)
    out = tmp_path / "run"
    log = run(
        *data,
        "OUTPUT_DIR",
        str(out),
        "TEST.EVAL_PERIOD",
        "2",
        "TEST.BEST_CHECKPOINT.METRIC",
        "bbox/AP50",
    )
    assert f"copypaste: {metric}" in log
    assert (out / "model_best.pth").is_file()
    saved = yaml.safe_load(open(out / "config.yaml"))
    assert saved["MODEL"]["RETINANET"]["NUM_CLASSES"] == 2
    assert sorted(saved["DATASETS"]["CLASS_NAMES"]) == ["disc", "rectangle"]
    log = run(
        "--eval-only",
        "MODEL.WEIGHTS",
        str(out / "model_best.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
        config=str(out / "config.yaml"),
    )
    assert f"copypaste: {metric}" in log


@pytest.mark.slow
def test_coco_ap_of_a_csv_dataset_is_written_beside_the_results(tmp_path):
    run(*own_dataset(tmp_path / "data", "csv"), "OUTPUT_DIR", str(tmp_path / "run"))
    results = json.load(open(tmp_path / "run" / "inference" / "coco_instances_results.json"))
    assert results and {r["category_id"] for r in results} <= {0, 1}  # the seeded run detects


@pytest.mark.slow
def test_a_run_on_a_users_dataset_resumes_from_its_last_checkpoint(tmp_path):
    data = own_dataset(tmp_path / "data", "voc")
    out = str(tmp_path / "run")
    run(*data, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0")
    log = run("--resume", *data, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "0")
    assert "Loading from" in log and "model_final.pth" in log
    assert "Starting training from iteration 2" in log


@pytest.mark.slow
def test_spawned_workers_see_a_users_dataset(tmp_path):
    out = tmp_path / "ddp"
    run(
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        *own_dataset(tmp_path / "data", "csv"),
        "OUTPUT_DIR",
        str(out),
        "SOLVER.MAX_ITER",
        "2",
        "TEST.EVAL_PERIOD",
        "0",
    )
    assert (out / "model_final.pth").is_file()


@pytest.mark.slow
def test_training_without_a_dataset_names_the_key_to_set(tmp_path):
    log = run("DATASETS.TRAIN", "()", "OUTPUT_DIR", str(tmp_path), expect_success=False)
    assert "DATASETS.TRAIN is empty: name the training data" in log


@pytest.mark.slow
def test_demo_and_pictures_take_the_trained_config_with_its_classes(tmp_path):
    data = own_dataset(tmp_path / "data", "voc")
    out = tmp_path / "run"
    run(*data, "OUTPUT_DIR", str(out), "TEST.EVAL_PERIOD", "0")
    images = os.path.join(data[3][6:-3], "*.png")
    log = run(
        "--weights",
        str(out / "model_final.pth"),
        "--input",
        images,
        "--output",
        str(tmp_path / "demo"),
        "--confidence-threshold",
        "0.0",
        script="demo/demo.py",
        config=str(out / "config.yaml"),
    )
    assert len(os.listdir(tmp_path / "demo")) == 3, log
    log = run(
        "--weights",
        str(out / "model_final.pth"),
        "--output",
        str(tmp_path / "pictures"),
        "--dataset",
        data[3][2:-3],
        script="tools/draw_detections.py",
        config=str(out / "config.yaml"),
    )
    assert len(os.listdir(tmp_path / "pictures")) == 3, log
