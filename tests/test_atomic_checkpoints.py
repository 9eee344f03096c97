"""A crash while a checkpoint is written leaves the previous checkpoint and last_checkpoint
valid."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ltm_d2.checkpoint import SafeCheckpointer, safe_checkpointer, write_atomically

from support import REPO


def checkpointer(save_dir, value):
    model = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(model.weight, value)
    return SafeCheckpointer(model, str(save_dir))


def test_save_writes_the_checkpoint_then_points_last_checkpoint_at_it(tmp_path):
    checkpointer(tmp_path, 1.0).save("model_0000001")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    loaded = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert torch.equal(loaded["model"]["weight"], torch.ones(2, 2))
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]


def test_an_exception_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpointer(tmp_path, 1.0).save("model_0000001")

    def write_half_then_fail(data, f):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(safe_checkpointer.torch, "save", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        checkpointer(tmp_path, 2.0).save("model_0000003")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


# Saves model_0000001, then is killed (SIGKILL) half-way through writing model_0000003.
KILLED_WHILE_WRITING = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from ltm_d2.checkpoint import SafeCheckpointer, safe_checkpointer

    model = torch.nn.Linear(2, 2)
    torch.nn.init.ones_(model.weight)
    checkpointer = SafeCheckpointer(model, sys.argv[1])
    checkpointer.save("model_0000001")

    def write_half_then_die(data, f):
        f.write(b"PK\\x03\\x04 half a zip file")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    safe_checkpointer.torch.save = write_half_then_die
    torch.nn.init.zeros_(model.weight)
    checkpointer.save("model_0000003")
    """
)


def test_a_process_killed_while_writing_leaves_the_previous_checkpoint_valid(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_WRITING, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -9, result.stderr[-2000:]
    assert not (tmp_path / "model_0000003.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    model = torch.nn.Linear(2, 2)
    SafeCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert torch.equal(model.weight, torch.ones(2, 2))
    leftovers = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model_0000003.pth.")


def test_write_atomically_replaces_an_existing_file_whole(tmp_path):
    path = tmp_path / "last_checkpoint"
    path.write_text("model_0000001.pth")
    write_atomically(str(path), lambda f: f.write(b"model_0000003.pth"))
    assert path.read_text() == "model_0000003.pth"
    assert os.listdir(tmp_path) == ["last_checkpoint"]
