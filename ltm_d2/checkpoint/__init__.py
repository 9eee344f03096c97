"""Checkpoints that survive crashes and never run code from the files they read."""

from .atomic_file import write_atomically
from .fine_tuning import HeadAdaptation, box_regression_weights, convert_box_deltas
from .freeanchor_conversion import (
    anchor_permutation,
    convert_freeanchor_state_dict,
    detectron2_name,
)
from .safe_checkpointer import DiskFullError, SafeCheckpointer
from .safe_loading import UnsafeCheckpointError, load_pickle_safely, load_torch_safely
from .state_dict_file import CheckpointFileError, load_checkpoint_file, load_state_dict_file

__all__ = [
    "CheckpointFileError",
    "DiskFullError",
    "HeadAdaptation",
    "SafeCheckpointer",
    "UnsafeCheckpointError",
    "anchor_permutation",
    "box_regression_weights",
    "convert_box_deltas",
    "convert_freeanchor_state_dict",
    "detectron2_name",
    "load_checkpoint_file",
    "load_pickle_safely",
    "load_state_dict_file",
    "load_torch_safely",
    "write_atomically",
]
