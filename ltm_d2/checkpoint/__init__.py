"""Checkpoints that survive crashes and never run code from the files they read."""
from .atomic_file import write_atomically
from .safe_loading import UnsafeCheckpointError, load_pickle_safely, load_torch_safely
from .safe_checkpointer import SafeCheckpointer

__all__ = [
    "SafeCheckpointer",
    "UnsafeCheckpointError",
    "load_pickle_safely",
    "load_torch_safely",
    "write_atomically",
]
