"""Tiny end-to-end runs of train_net.py: train -> checkpoint -> --eval-only, and two CPU workers."""

import json
import os

import cv2
import pytest
import torch

from support import TINY_CONFIG, load_tool, run


def copypaste_values(log):
    """The figures of the last evaluation in a train_net.py log (Detectron2's copypaste lines)."""
    lines = [line for line in log.splitlines() if "copypaste: " in line]
    assert lines, "no evaluation in the log"
    return lines[-1].split("copypaste: ")[1]


@pytest.mark.slow
def test_train_checkpoint_then_eval_only_round_trip(tmp_path):
    out = str(tmp_path / "run")
    trained = run("OUTPUT_DIR", out)
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    evaluated = run(
        "--eval-only",
        "MODEL.WEIGHTS",
        os.path.join(out, "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    )
    results = json.load(open(tmp_path / "eval" / "inference" / "coco_instances_results.json"))
    assert results  # the seeded run detects something
    # The final weights, read back, score exactly the AP the run reported at its end.
    assert copypaste_values(evaluated) == copypaste_values(trained)

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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_tiny_config_trains_the_same_weights_and_losses_at_every_run(tmp_path):
    """Its SEED fixes the initial weights and the batches: no run's result is left to chance."""
    train_net = load_tool("train_net.py")
    runs = []
    for name in ("first", "second"):
        out = tmp_path / name
        args = train_net.argument_parser().parse_args(
            ["--config-file", TINY_CONFIG, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "2"]
            + ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "DATASETS.TEST", "()"]
        )
        train_net.main(args)
        (metrics,) = [json.loads(line) for line in open(out / "metrics.json")]
        weights = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
        runs.append((metrics, weights["model"]))
    (first_metrics, first), (second_metrics, second) = runs
    losses = [k for k in first_metrics if k.startswith("loss_") or k == "total_loss"]
    assert "total_loss" in losses
    assert [first_metrics[k] for k in losses] == [second_metrics[k] for k in losses]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
