"""
A training run killed with SIGKILL and restarted with --resume ends with the weights, optimizer
state and learning rate of an uninterrupted run (CPU, fixed SEED).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from support import REPO, TINY_CONFIG

# 6 iterations of 2 images of 64 px, a checkpoint every 2 (after iterations 1, 3 and 5), the LR
# dropping after iteration 3; no evaluation.
RUN = (
    "SEED",
    "7",
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "64",
    "SOLVER.MAX_ITER",
    "6",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "SOLVER.STEPS",
    "(3,)",
    "SOLVER.BASE_LR",
    "0.01",
    "DATASETS.TEST",
    "()",
)


def command(output_dir, *args):
    return [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        TINY_CONFIG,
        *args,
        "OUTPUT_DIR",
        str(output_dir),
        *RUN,
    ]


def train(output_dir, *args):
    result = subprocess.run(
        command(output_dir, *args), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def kill_after_first_checkpoint(output_dir):
    """Start training and SIGKILL it as soon as the checkpoint of iteration 1 is complete."""
    process = subprocess.Popen(
        command(output_dir), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (output_dir / "last_checkpoint").exists():
        assert process.poll() is None and time.monotonic() < deadline, (
            "training ended before its first checkpoint"
        )
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def last_lr(output_dir):
    return [json.loads(line) for line in open(output_dir / "metrics.json")][-1]["lr"]


def assert_same(a, b, path="checkpoint"):
    """Recursive exact equality of two loaded checkpoints."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{k}]")
    else:
        assert a == b, path


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path):
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    train(uninterrupted)
    kill_after_first_checkpoint(killed)
    assert not (killed / "model_final.pth").exists()
    last = (killed / "last_checkpoint").read_text()
    iteration = torch.load(killed / last, weights_only=True)["iteration"]

    log = train(killed, "--resume")

    assert f"Starting training from iteration {iteration + 1}" in log
    expected = torch.load(uninterrupted / "model_final.pth", weights_only=True)
    resumed = torch.load(killed / "model_final.pth", weights_only=True)
    assert_same(resumed["model"], expected["model"])
    assert_same(
        resumed["trainer"]["_trainer"]["optimizer"], expected["trainer"]["_trainer"]["optimizer"]
    )
    assert_same(resumed["trainer"]["hooks"], expected["trainer"]["hooks"])  # scheduler, RNG state
    assert last_lr(killed) == last_lr(uninterrupted) == 0.001
