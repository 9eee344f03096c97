"""Tiny end-to-end runs of train_net.py: train -> checkpoint -> --eval-only, and two CPU workers."""

import json
import os

import cv2

from support import run


def test_train_checkpoint_then_eval_only_round_trip(tmp_path):
    out = str(tmp_path / "run")
    log = run("OUTPUT_DIR", out)
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert "Evaluation results for bbox" in log
    log = run(
        "--eval-only",
        "MODEL.WEIGHTS",
        os.path.join(out, "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    )
    assert "Evaluation results for bbox" in log
    results = json.load(open(tmp_path / "eval" / "inference" / "coco_instances_results.json"))
    assert isinstance(results, list)

    pictures = tmp_path / "pictures"
    log = run(
        "--weights",
        os.path.join(out, "model_final.pth"),
        "--output",
        str(pictures),
        "--num-images",
        "2",
        "--confidence-threshold",
        "0.0",
        script="tools/draw_detections.py",
    )
    drawn = sorted(pictures.iterdir())
    assert len(drawn) == 2 and f"Pictures written to {pictures}" in log
    image = cv2.imread(str(drawn[0]))
    assert image is not None and image.shape[1] > 2 * image.shape[0]  # truth | detections
    assert image.std() > 0


def test_drawing_without_a_checkpoint_fails_with_a_clear_message(tmp_path):
    log = run(
        "--weights",
        str(tmp_path / "missing.pth"),
        "--output",
        str(tmp_path),
        script="tools/draw_detections.py",
        expect_success=False,
    )
    assert "missing.pth does not exist" in log


def test_ltm_af_trains_then_evaluates_from_its_checkpoint(tmp_path):
    af = ("MODEL.META_ARCHITECTURE", "LTMAF", "MODEL.LTM.BBOX_REG_WEIGHT", "5.5")
    out = str(tmp_path / "af")
    log = run("OUTPUT_DIR", out, *af)
    assert "Evaluation results for bbox" in log
    log = run(
        "--eval-only",
        "MODEL.WEIGHTS",
        os.path.join(out, "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "af_eval"),
        *af,
    )
    assert "Evaluation results for bbox" in log
    assert "LTMAF" in open(os.path.join(out, "config.yaml")).read()


def test_two_cpu_workers_train(tmp_path):
    out = str(tmp_path / "ddp")
    run(
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        "OUTPUT_DIR",
        out,
        "SOLVER.MAX_ITER",
        "2",
        "TEST.EVAL_PERIOD",
        "0",
    )
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
