"""Tiny end-to-end runs of train_net.py: train -> checkpoint -> --eval-only, and two CPU workers."""
import json
import os
import subprocess
import sys

from conftest import REPO, TINY_CONFIG


def run(*args, timeout=600):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", TINY_CONFIG, *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_train_checkpoint_then_eval_only_round_trip(tmp_path):
    out = str(tmp_path / "run")
    log = run("OUTPUT_DIR", out)
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert "Evaluation results for bbox" in log
    log = run("--eval-only", "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"))
    assert "Evaluation results for bbox" in log
    results = json.load(open(tmp_path / "eval" / "inference" / "coco_instances_results.json"))
    assert isinstance(results, list)


def test_two_cpu_workers_train(tmp_path):
    out = str(tmp_path / "ddp")
    run("--num-gpus", "2", "--dist-url", "auto", "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0")
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    out = str(tmp_path / "resume")
    run("OUTPUT_DIR", out, "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()")
    log = run("--resume", "OUTPUT_DIR", out, "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()")
    assert "Starting training from iteration 2" in log
