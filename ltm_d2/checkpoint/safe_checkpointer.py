"""Detectron2's DetectionCheckpointer, writing atomically and reading without running code."""

import errno
import os
from typing import Any, BinaryIO, Callable, Dict, Iterator, Optional

import torch

from detectron2.checkpoint import DetectionCheckpointer

from ..errors import UserError
from .atomic_file import write_atomically
from .fine_tuning import RECORD_KEY, HeadAdaptation, box_regression_weights
from .safe_loading import load_pickle_safely, load_torch_safely

# The errors of a write that found no room: the device is full, or the user's quota is spent.
DISK_FULL_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


class DiskFullError(UserError, OSError):
    """A checkpoint could not be written for want of space; the previous one is kept."""


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then the exception it was raised from or while handling, and so on."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def disk_full_errno(error: BaseException) -> Optional[int]:
    """
    ENOSPC or EDQUOT if `error`, or an exception of its chain, is an OSError with that errno,
    else None. torch.save reports a failed write of its zip file as a RuntimeError raised while
    the OSError of the write was handled, or the other way round.
    """
    for e in exception_chain(error):
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return e.errno
    return None


class SafeCheckpointer(DetectionCheckpointer):
    """
    A DetectionCheckpointer (same arguments, same files, same model-zoo conversions) that

    * writes each checkpoint atomically (temporary file, fsync, rename), then points
      ``last_checkpoint`` at it, itself atomically: a crash at any moment leaves the previous
      checkpoint and ``last_checkpoint`` valid, and ``last_checkpoint`` never names a partial file;
    * reads ``.pth`` files (and ``.pyth``, and URLs, once downloaded) with
      ``torch.load(weights_only=True)`` and ``.pkl`` files with a restricted unpickler, so that a
      malicious file raises UnsafeCheckpointError instead of running code;
    * ends on a full disk (or an exceeded quota) with a DiskFullError, a message naming the file,
      the checkpoint kept and how to continue, rather than the OSError and torch's RuntimeError,
      and on Ctrl-C with a KeyboardInterrupt, which torch.save turns into a RuntimeError too;
    * records in each checkpoint the box-regression weights of the model's head
      (``bbox_reg_weights``), and, given the run's config `cfg`, adapts the head of the weights it
      loads to the model's (:class:`HeadAdaptation`: box deltas converted to the config's
      MODEL.RETINANET.BBOX_REG_WEIGHTS, classifier of another class count reset to the prior),
      except when it resumes the run from its own last checkpoint.

    ``save_dir`` must be a local directory.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        cfg=None,
        head_adaptation: Optional[HeadAdaptation] = None,
        **kwargs: Any,
    ):
        """`cfg`: a yacs config, whose HeadAdaptation is used; `head_adaptation`: one given
        (:meth:`HeadAdaptation.from_lazy_config` for a LazyConfig)."""
        super().__init__(model, save_dir, **kwargs)
        if cfg is not None:
            head_adaptation = HeadAdaptation.from_config(cfg)
        self.head_adaptation = head_adaptation
        self._resuming = False

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """Detectron2's; the run's own last checkpoint, when resumed, is loaded as it is."""
        self._resuming = resume and self.has_checkpoint()
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._resuming = False

    def _load_model(self, checkpoint: Dict[str, Any]):
        record = checkpoint.pop(RECORD_KEY, None)
        incompatible = super()._load_model(checkpoint)
        if self.head_adaptation is None or self._resuming:
            return incompatible
        return self.head_adaptation.adapt(self.model, incompatible, record, self.logger)

    def save(self, name: str, **kwargs: Any) -> None:
        """
        Write model, checkpointables and `kwargs` to ``<save_dir>/<name>.pth``, atomically; raises
        DiskFullError if the disk is full, and lets every other error of the write propagate.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        weights = box_regression_weights(self.model)
        if weights is not None:
            data[RECORD_KEY] = weights
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        self._write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Point ``<save_dir>/last_checkpoint`` at a complete checkpoint file, atomically."""
        self._write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )

    def _write(self, path: str, write: Callable[[BinaryIO], None]) -> None:
        """
        write_atomically(path, write), raising DiskFullError if the disk is full, and
        KeyboardInterrupt on Ctrl-C, which torch.save would turn into a RuntimeError of its zip
        writer.
        """
        try:
            write_atomically(path, write)
        except (OSError, RuntimeError) as e:
            if any(isinstance(cause, KeyboardInterrupt) for cause in exception_chain(e)):
                raise KeyboardInterrupt from e
            code = disk_full_errno(e)
            if code is None:
                raise
            raise DiskFullError(self._disk_full_message(path, code)) from e

    def _disk_full_message(self, path: str, code: int) -> str:
        """What could not be written and why, which checkpoint is kept, and how to go on."""
        if self.has_checkpoint():  # last_checkpoint, which the failed write left as it was
            kept = f"The last complete checkpoint, {self.get_checkpoint_file()}, is kept"
            action = "continue from it with the same command and --resume"
        else:
            kept = "No checkpoint was written before it"
            action = "run the same command again"
        return (
            f"cannot write {path}: {DISK_FULL_ERRNOS[code]} in {self.save_dir} (OUTPUT_DIR). "
            f"{kept}. Free space there, then {action}."
        )

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            return self._model_zoo_pickle(filename)
        if filename.endswith(".pyth"):
            load_torch_safely(filename)  # refuse an unsafe file before Detectron2's loader reads it
        return super()._load_file(filename)

    def _torch_load(self, f: str) -> Dict[str, Any]:
        return load_torch_safely(f)

    def _model_zoo_pickle(self, filename: str) -> Dict[str, Any]:
        """DetectionCheckpointer's reading of a .pkl model-zoo file, with the safe unpickler."""
        data = load_pickle_safely(filename)
        if not isinstance(data, dict):
            raise ValueError(
                f"{filename}: a .pkl checkpoint must hold a dict, found {type(data).__name__}"
            )
        if "model" in data and "__author__" in data:  # Detectron2 model zoo
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        # Caffe2 / Detectron1 model zoo; detection models keep their weights under "blobs"
        data = data.get("blobs", data)
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
