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


# Training that goes on until it is interrupted, with a checkpoint after each iteration.
ENDLESS = ["SOLVER.MAX_ITER", "10000", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()"]
ENDLESS += ["INPUT.MIN_SIZE_TRAIN", "(64,)"]


def interrupt_training(output_dir, *flags, ctrl_c_reaches):
    """
    Run train_net.py and, once its first checkpoint is written, send SIGINT to its process group
    (`ctrl_c_reaches` "all", as Ctrl-C typed in its terminal) or to its main process alone
    ("main"). Returns the exit status, stdout, stderr, and the overrides of the command line.
    """
    overrides = ["OUTPUT_DIR", str(output_dir), *ENDLESS]
    command = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", TINY_CONFIG]
    process = subprocess.Popen(
        [*command, *flags, *overrides],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as in a terminal
        # SIGINT handled as in a terminal, even when the tests run as a background job of a
        # shell without job control, which starts them with SIGINT ignored (inherited here).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300
        while not (output_dir / "last_checkpoint").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        if ctrl_c_reaches == "all":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, stdout, stderr, overrides


def assert_ended_with_the_resume_command(code, stdout, stderr, output_dir, command):
    assert code == 130 and "Traceback" not in stdout + stderr, stdout[-2000:] + stderr[-2000:]
    checkpoint = output_dir / (output_dir / "last_checkpoint").read_text()
    assert stderr.count("Interrupted.") == 1
    assert f"Interrupted. The last checkpoint is {checkpoint}: continue from it with" in stderr
    assert stderr.endswith(f"--config-file {TINY_CONFIG} {shlex.join(command)}\n")


@pytest.mark.slow
def test_ctrl_c_during_training_ends_it_with_the_message(tmp_path):
    code, stdout, stderr, overrides = interrupt_training(tmp_path, ctrl_c_reaches="all")
    assert_ended_with_the_resume_command(code, stdout, stderr, tmp_path, ["--resume", *overrides])
    assert "Total training time" in stdout  # Detectron2's hooks ended training (after_train)


@pytest.mark.slow
@pytest.mark.parametrize("ctrl_c_reaches", ["all", "main"])
def test_ctrl_c_ends_every_worker_and_the_message_comes_once(tmp_path, ctrl_c_reaches):
    flags = ["--num-gpus", "2"]  # two CPU workers
    code, stdout, stderr, overrides = interrupt_training(
        tmp_path, *flags, ctrl_c_reaches=ctrl_c_reaches
    )
    command = [*flags, "--resume", *overrides]
    assert_ended_with_the_resume_command(code, stdout, stderr, tmp_path, command)
