"""
Errors a user causes end train_net.py, demo/demo.py and the tools with a short message (what, where,
what to do) and exit status 2, without a traceback; LTM_D2_DEBUG=1 shows the traceback again.
The checks that need no model run before any model is built.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from ltm_d2.errors import run_main

from support import REPO, TINY_CONFIG, load_tool


@pytest.fixture(scope="module")
def train_net():
    return load_tool("train_net.py")


def train_net_error(train_net, capsys, monkeypatch, *argv):
    """The message with which train_net.py ends on `argv`; fails if it builds a model."""
    monkeypatch.setattr(train_net, "main", lambda args: pytest.fail("a model would be built"))
    args = train_net.argument_parser().parse_args(list(argv))
    with pytest.raises(SystemExit) as exit_info:
        run_main(train_net.start, args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith("Error: ") and len(err.splitlines()) <= 4, err
    return err


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_yaml_syntax_error_names_the_file_line_and_column(
    train_net, capsys, monkeypatch, tmp_path
):
    config = write(tmp_path, "bad.yaml", "MODEL:\n  LTM: [1\n")
    err = train_net_error(train_net, capsys, monkeypatch, "--config-file", config)
    assert f"{config}:3:1: not a valid config file" in err


def test_a_python_tag_is_refused_as_an_invalid_file(train_net, capsys, monkeypatch, tmp_path):
    config = write(tmp_path, "tag.yaml", "MODEL:\n  WEIGHTS: !!python/object/apply:os.getcwd []\n")
    err = train_net_error(train_net, capsys, monkeypatch, "--config-file", config)
    assert f"{config}:2:12: not a valid config file" in err and "python/object" in err


def test_an_unknown_key_in_a_file_names_the_key_and_its_line(
    train_net, capsys, monkeypatch, tmp_path
):
    config = write(
        tmp_path, "key.yaml", f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  LTM:\n    BAG_SIZ: 3\n'
    )
    err = train_net_error(train_net, capsys, monkeypatch, "--config-file", config)
    assert f"{config}:4: unknown config key MODEL.LTM.BAG_SIZ" in err


def test_an_unknown_key_on_the_command_line(train_net, capsys, monkeypatch):
    err = train_net_error(
        train_net, capsys, monkeypatch, "--config-file", TINY_CONFIG, "MODEL.LTM.BAG_SIZ", "3"
    )
    assert "command line override MODEL.LTM.BAG_SIZ: unknown config key" in err


def test_a_missing_base_names_the_missing_file(train_net, capsys, monkeypatch, tmp_path):
    config = write(tmp_path, "child.yaml", '_BASE_: "parent.yaml"\n')
    err = train_net_error(train_net, capsys, monkeypatch, "--config-file", config)
    assert f"{tmp_path / 'parent.yaml'}: no such file, named by _BASE_ in {config}" in err


def test_a_missing_config_file(train_net, capsys, monkeypatch, tmp_path):
    err = train_net_error(
        train_net, capsys, monkeypatch, "--config-file", str(tmp_path / "no.yaml")
    )
    assert f"{tmp_path / 'no.yaml'}" in err and "does not exist" in err


def test_missing_weights_are_reported_before_the_model_is_built(
    train_net, capsys, monkeypatch, tmp_path
):
    err = train_net_error(
        train_net,
        capsys,
        monkeypatch,
        "--config-file",
        TINY_CONFIG,
        "--eval-only",
        "MODEL.WEIGHTS",
        str(tmp_path / "model.pth"),
        "OUTPUT_DIR",
        str(tmp_path),
    )
    assert f"MODEL.WEIGHTS {tmp_path / 'model.pth'}: no such file" in err


def test_an_unwritable_output_folder(train_net, capsys, monkeypatch, tmp_path):
    blocker = write(tmp_path, "file", "")  # a file where a folder should be
    err = train_net_error(
        train_net, capsys, monkeypatch, "--config-file", TINY_CONFIG, "OUTPUT_DIR", f"{blocker}/out"
    )
    assert f"OUTPUT_DIR {blocker}/out: cannot write there" in err


def test_a_schedule_of_no_iterations_is_refused_before_the_model_is_built(
    train_net, capsys, monkeypatch
):
    err = train_net_error(
        train_net, capsys, monkeypatch, "--config-file", TINY_CONFIG, "SOLVER.MAX_ITER", "0"
    )
    assert "SOLVER.MAX_ITER 0: expected at least 1 iteration to train" in err


def test_an_augmentation_it_cannot_use_is_refused_before_the_model_is_built(
    train_net, capsys, monkeypatch, tmp_path
):
    err = train_net_error(
        train_net,
        capsys,
        monkeypatch,
        "--config-file",
        TINY_CONFIG,
        "OUTPUT_DIR",
        str(tmp_path),
        "INPUT.AUGMENT.BRIGHTNESS",
        "(1.2, 0.8)",
    )
    assert "INPUT.AUGMENT.BRIGHTNESS (1.2, 0.8): expected () (off) or a range of factors" in err


def test_an_invalid_dataset_is_reported_before_the_model_is_built(
    train_net, capsys, monkeypatch, tmp_path
):
    annotations = write(tmp_path, "train.json", "{not json")
    err = train_net_error(
        train_net,
        capsys,
        monkeypatch,
        "--config-file",
        TINY_CONFIG,
        "OUTPUT_DIR",
        str(tmp_path),
        "DATASETS.TRAIN",
        f'("coco:{annotations}",)',
    )
    assert annotations in err


def test_a_flag_after_the_overrides(train_net, capsys, monkeypatch, tmp_path):
    err = train_net_error(
        train_net,
        capsys,
        monkeypatch,
        "--config-file",
        TINY_CONFIG,
        "OUTPUT_DIR",
        str(tmp_path),
        "--machine-rank",
        "1",
    )
    assert "--machine-rank comes after the KEY VALUE overrides" in err


@pytest.mark.parametrize("script", ["demo/demo.py", "tools/draw_detections.py"])
def test_demo_and_tools_end_on_a_user_error_with_its_message(capsys, monkeypatch, tmp_path, script):
    module = load_tool(script)
    config = write(
        tmp_path, "key.yaml", f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  LTM:\n    BAG_SIZ: 3\n'
    )
    weights = write(tmp_path, "model.pth", "")
    argv = ["--config-file", config, "--weights", weights, "--output", str(tmp_path)]
    argv += ["--input", TINY_CONFIG] if script == "demo/demo.py" else []
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exit_info:
        run_main(module.main)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"{config}:4: unknown config key MODEL.LTM.BAG_SIZ" in err


def run_train_net(*argv, **env):
    return subprocess.run(
        [sys.executable, "train_net.py", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


@pytest.mark.slow
def test_the_command_line_shows_the_message_alone_and_the_traceback_with_ltm_d2_debug():
    argv = ("--config-file", TINY_CONFIG, "MODEL.LTM.BAG_SIZ", "3")
    plain, debug = run_train_net(*argv), run_train_net(*argv, LTM_D2_DEBUG="1")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert "Error: command line override MODEL.LTM.BAG_SIZ" in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# train_net.py, its torch.save failing with ENOSPC at the second checkpoint (after iteration 1).
FULL_DISK_AT_SECOND_CHECKPOINT = textwrap.dedent(
    """
    import errno, runpy, sys
    from ltm_d2.checkpoint import safe_checkpointer

    save, saved = safe_checkpointer.torch.save, []

    def save_until_the_disk_is_full(data, f):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(save(data, f))

    safe_checkpointer.torch.save = save_until_the_disk_is_full
    sys.argv = ["train_net.py", *sys.argv[1:]]
    runpy.run_path("train_net.py", run_name="__main__")
    """
)


@pytest.mark.slow
def test_a_full_disk_during_training_ends_with_its_message_alone(tmp_path):
    argv = ["--config-file", TINY_CONFIG, "OUTPUT_DIR", str(tmp_path)]
    argv += ["SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()"]
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK_AT_SECOND_CHECKPOINT, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    error = f"Error: cannot write {tmp_path}/model_0000001.pth: no space left on device"
    assert error in result.stderr
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"
