"""Reading the model state dict of a checkpoint file, with errors that name the file."""

import os
from typing import Any, Dict

import torch

from ..errors import UserError
from .safe_loading import load_torch_safely


class CheckpointFileError(UserError, ValueError):
    """A checkpoint file is missing or holds no model state dict."""


def load_checkpoint_file(path: str, expected: str) -> Dict[str, Any]:
    """
    A torch checkpoint file as a dict whose "model" entry is its model state dict (the file's
    "model" entry, or the whole file when it is a dict of tensors), beside the file's other
    entries, read without running code (:func:`load_torch_safely`).

    Args:
        expected: what the file should be, for the error message (e.g. "a Detectron2 checkpoint").
    """
    if not os.path.isfile(path):
        raise CheckpointFileError(f"{path} does not exist (expected {expected})")
    try:
        checkpoint = load_torch_safely(path)
    except Exception as e:  # unpickling errors of any kind: the file is not a torch checkpoint
        raise CheckpointFileError(
            f"{path} is not a torch checkpoint ({type(e).__name__}: {e}; expected {expected})"
        )
    state_dict = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise CheckpointFileError(f"{path} holds no model state dict (expected {expected})")
    return {**checkpoint, "model": state_dict} if "model" in checkpoint else {"model": state_dict}


def load_state_dict_file(path: str, expected: str) -> Dict[str, torch.Tensor]:
    """The model state dict of a torch checkpoint file (:func:`load_checkpoint_file`)."""
    return load_checkpoint_file(path, expected)["model"]
