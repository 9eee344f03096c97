"""
Ctrl-C ends train_net.py with exit status 130, without a traceback, and with the command that
continues the run from its last checkpoint (the same command with --resume), or a note that no
checkpoint was written yet.
"""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from support import REPO, TINY_CONFIG, load_tool


@pytest.fixture(scope="module")
def train_net():
    return load_tool("train_net.py")


def main_interrupted(args):
    raise KeyboardInterrupt


def interrupted(train_net, capsys, monkeypatch, *argv):
    """Exit status and stderr of `train_net.py argv`, its main() interrupted by Ctrl-C."""
    monkeypatch.setattr(train_net, "main", main_interrupted)
    monkeypatch.setattr(sys, "argv", ["train_net.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        train_net.run(train_net.argument_parser().parse_args(list(argv)))
    return exit_info.value.code, capsys.readouterr().err


def test_ctrl_c_names_the_last_checkpoint_and_the_command_that_resumes(
    train_net, capsys, monkeypatch, tmp_path
):
    (tmp_path / "last_checkpoint").write_text("model_0000003.pth")
    argv = ("--config-file", TINY_CONFIG, "--num-gpus", "1", "OUTPUT_DIR", str(tmp_path))
    code, err = interrupted(train_net, capsys, monkeypatch, *argv)
    assert code == 130 and "Traceback" not in err
    assert err == (
        f"Interrupted. The last checkpoint is {tmp_path}/model_0000003.pth: continue from it with\n"
        f"  python train_net.py --config-file {TINY_CONFIG} --num-gpus 1 --resume "
        f"OUTPUT_DIR {tmp_path}\n"
    )


def test_ctrl_c_in_a_resumed_run_gives_its_own_command_back(
    train_net, capsys, monkeypatch, tmp_path
):
    (tmp_path / "last_checkpoint").write_text("model_0000005.pth")
    argv = ("--config-file", TINY_CONFIG, "--resume", "OUTPUT_DIR", str(tmp_path))
    code, err = interrupted(train_net, capsys, monkeypatch, *argv)
    assert code == 130
    assert err.endswith(f"  python train_net.py {' '.join(argv)}\n")


def test_ctrl_c_before_the_first_checkpoint_says_to_start_over(
    train_net, capsys, monkeypatch, tmp_path
):
    argv = ("--config-file", TINY_CONFIG, "OUTPUT_DIR", str(tmp_path))
    code, err = interrupted(train_net, capsys, monkeypatch, *argv)
    assert code == 130
    assert err == (
        f"Interrupted. No checkpoint was written yet in {tmp_path}: run the same command again "
        "to start over.\n"
    )


def test_ctrl_c_during_an_evaluation_says_to_run_it_again(train_net, capsys, monkeypatch, tmp_path):
    argv = ("--config-file", TINY_CONFIG, "--eval-only", "OUTPUT_DIR", str(tmp_path))
    code, err = interrupted(train_net, capsys, monkeypatch, *argv)
    assert code == 130
    assert err == "Interrupted: the evaluation did not finish. Run the same command again.\n"


def test_ltm_d2_debug_keeps_the_keyboard_interrupt(train_net, monkeypatch, tmp_path):
    monkeypatch.setenv("LTM_D2_DEBUG", "1")
    monkeypatch.setattr(train_net, "main", main_interrupted)
    args = ["--config-file", TINY_CONFIG, "OUTPUT_DIR", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        train_net.run(train_net.argument_parser().parse_args(args))


def test_sigint_during_training_ends_the_run_with_the_message(tmp_path):
    """A real run, one process: SIGINT once its first checkpoint is written."""
    command = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", TINY_CONFIG]
    command += ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "10000", "DATASETS.TEST", "()"]
    command += ["SOLVER.CHECKPOINT_PERIOD", "1", "INPUT.MIN_SIZE_TRAIN", "(64,)"]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (tmp_path / "last_checkpoint").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stdout + stderr, stderr[-3000:]
    assert "Total training time" in stdout  # Detectron2's hooks ended training (after_train)
    checkpoint = tmp_path / (tmp_path / "last_checkpoint").read_text()
    assert f"Interrupted. The last checkpoint is {checkpoint}: continue from it with" in stderr
    assert stderr.endswith(f"--config-file {TINY_CONFIG} --resume {shlex.join(command[4:])}\n")
