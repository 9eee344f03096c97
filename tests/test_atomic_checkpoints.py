"""A crash while a checkpoint is written leaves the previous checkpoint and last_checkpoint
valid; a full disk ends with a message naming the file, the checkpoint kept and --resume."""

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ltm_d2.checkpoint import (
    DiskFullError,
    SafeCheckpointer,
    atomic_file,
    safe_checkpointer,
    write_atomically,
)
from ltm_d2.errors import UserError

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


def write_half_then_raise(error):
    """A torch.save that writes half a zip file, then raises `error`."""

    def save(data, f):
        f.write(b"PK\x03\x04 half a zip file")
        raise error

    return save


def assert_previous_checkpoint_kept(save_dir):
    assert sorted(os.listdir(save_dir)) == ["last_checkpoint", "model_0000001.pth"]
    assert (save_dir / "last_checkpoint").read_text() == "model_0000001.pth"


def test_an_exception_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpointer(tmp_path, 1.0).save("model_0000001")
    failing_save = write_half_then_raise(OSError(errno.EIO, "Input/output error"))
    monkeypatch.setattr(safe_checkpointer.torch, "save", failing_save)
    with pytest.raises(OSError, match="Input/output error") as error:
        checkpointer(tmp_path, 2.0).save("model_0000003")
    assert type(error.value) is OSError  # only a full disk becomes a message
    assert_previous_checkpoint_kept(tmp_path)


def test_a_full_disk_names_the_file_the_checkpoint_kept_and_resume(tmp_path, monkeypatch):
    checkpointer(tmp_path, 1.0).save("model_0000001")
    failing_save = write_half_then_raise(OSError(errno.ENOSPC, "No space left on device"))
    monkeypatch.setattr(safe_checkpointer.torch, "save", failing_save)
    with pytest.raises(DiskFullError) as error:
        checkpointer(tmp_path, 2.0).save("model_0000003")
    message = str(error.value)
    assert isinstance(error.value, UserError)
    assert message.startswith(
        f"cannot write {tmp_path}/model_0000003.pth: no space left on device in {tmp_path}"
    )
    assert f"The last complete checkpoint, {tmp_path}/model_0000001.pth, is kept" in message
    assert message.endswith(
        "Free space there, then continue from it with the same command and --resume."
    )
    assert_previous_checkpoint_kept(tmp_path)


def test_an_exceeded_quota_behind_torchs_runtime_error_before_any_checkpoint(tmp_path, monkeypatch):
    def save(data, f):
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0")

    monkeypatch.setattr(safe_checkpointer.torch, "save", save)
    with pytest.raises(DiskFullError) as error:
        checkpointer(tmp_path, 1.0).save("model_0000001")
    message = str(error.value)
    assert "model_0000001.pth: disk quota exceeded" in message
    assert message.endswith(
        "No checkpoint was written before it. Free space there, then run the same command again."
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_torch_save_on_a_device_that_is_full_ends_with_the_message(tmp_path, monkeypatch):
    checkpointer(tmp_path, 1.0).save("model_0000001")

    def temporary_file_on_dev_full(prefix, suffix, dir):
        return os.open("/dev/full", os.O_WRONLY), os.path.join(dir, f"{prefix}full{suffix}")

    monkeypatch.setattr(atomic_file.tempfile, "mkstemp", temporary_file_on_dev_full)
    with pytest.raises(DiskFullError, match="model_0000003.pth: no space left on device"):
        checkpointer(tmp_path, 2.0).save("model_0000003")
    assert_previous_checkpoint_kept(tmp_path)


def test_a_full_disk_while_last_checkpoint_is_written_keeps_it_naming_the_previous_one(
    tmp_path, monkeypatch
):
    checkpointer(tmp_path, 1.0).save("model_0000001")

    def write_checkpoints_only(path, write):
        if path.endswith("last_checkpoint"):
            raise OSError(errno.ENOSPC, "No space left on device")
        write_atomically(path, write)

    monkeypatch.setattr(safe_checkpointer, "write_atomically", write_checkpoints_only)
    with pytest.raises(DiskFullError) as error:
        checkpointer(tmp_path, 2.0).save("model_0000003")
    assert str(error.value).startswith(f"cannot write {tmp_path}/last_checkpoint: no space")
    assert f"The last complete checkpoint, {tmp_path}/model_0000001.pth, is kept" in str(
        error.value
    )
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


class InterruptedFile:
    """A file whose third write is interrupted by Ctrl-C."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            raise KeyboardInterrupt
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_ctrl_c_while_torch_save_writes_stays_a_keyboard_interrupt(tmp_path, monkeypatch):
    checkpointer(tmp_path, 1.0).save("model_0000001")
    save = torch.save
    monkeypatch.setattr(
        safe_checkpointer.torch, "save", lambda data, f: save(data, InterruptedFile(f))
    )
    with pytest.raises(KeyboardInterrupt):  # torch.save itself raises a RuntimeError
        checkpointer(tmp_path, 2.0).save("model_0000003")
    assert_previous_checkpoint_kept(tmp_path)


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


@pytest.mark.slow
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
