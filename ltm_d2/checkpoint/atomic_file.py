"""Writing a file so that a crash leaves either the old file or the complete new one."""

import os
import tempfile
from typing import BinaryIO, Callable


def write_atomically(path: str, write: Callable[[BinaryIO], None]) -> None:
    """
    Call `write` on a temporary file in the directory of `path`, flush it to disk (fsync), then
    rename it to `path` (os.replace, atomic on POSIX and Windows) and fsync the directory, so
    that the rename itself survives a power cut. If the process dies at any point, `path` is
    either the previous file or the complete new one; a process killed before the rename leaves
    a hidden ``.<name>.*.tmp`` file beside it, which is never read. An exception raised by
    `write` removes the temporary file and propagates.
    """
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
