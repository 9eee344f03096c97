"""
Reading checkpoint files without running code from them.

A pickle can name any importable callable and have it called while it is read; a checkpoint
needs none of that. Torch files are read with ``torch.load(weights_only=True)``; ``.pkl`` files
(Detectron2's and Detectron1/Caffe2's model zoo) with an unpickler that builds only numpy arrays,
numbers, strings, bytes, lists, tuples and dicts.
"""

import pickle
from typing import Any, BinaryIO

import torch

from ..errors import UserError

# The globals a model-zoo .pkl refers to: numpy arrays and scalars (numpy 1.x and 2.x module
# names; _frombuffer for pickle protocol 5), OrderedDict, and _codecs.encode, with which pickle
# protocol 2 writes bytes. Everything else in such a file is a plain pickle opcode.
ALLOWED_PICKLE_GLOBALS = frozenset(
    [
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
    ]
)


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """A checkpoint file asked to build an object that a checkpoint does not need."""


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global outside ALLOWED_PICKLE_GLOBALS."""

    def __init__(self, file: BinaryIO, filename: str, **kwargs):
        super().__init__(file, **kwargs)
        self.filename = filename

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_PICKLE_GLOBALS:
            raise UnsafeCheckpointError(
                f"{self.filename}: refused to load: the file refers to '{module}.{name}', but a "
                "checkpoint .pkl may only contain numpy arrays, numbers, strings, lists and "
                "dicts. Nothing from the file was run."
            )
        return super().find_class(module, name)


def load_pickle_safely(filename: str) -> Any:
    """Read a .pkl checkpoint (Python 2 pickles too, as Detectron2 does) with
    RestrictedUnpickler."""
    with open(filename, "rb") as f:
        return RestrictedUnpickler(f, filename, encoding="latin1").load()


def load_torch_safely(filename: str) -> Any:
    """
    Read a torch checkpoint on the CPU with ``weights_only=True``: tensors, numbers, strings and
    containers of them, nothing callable. A file that needs more raises UnsafeCheckpointError.
    """
    try:
        return torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{filename}: refused to load: it is not a plain torch checkpoint of tensors, numbers, "
            f"strings and containers, so it could run code. Nothing from the file was run. "
            f"torch says: {_unpickling_reason(e)}"
        ) from e


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only error that names what the file asked for."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0])
