"""Detectron2's DetectionCheckpointer, writing atomically and reading without running code."""

import os
from typing import Any, Dict

import torch

from detectron2.checkpoint import DetectionCheckpointer

from .atomic_file import write_atomically
from .safe_loading import load_pickle_safely, load_torch_safely


class SafeCheckpointer(DetectionCheckpointer):
    """
    A DetectionCheckpointer (same arguments, same files, same model-zoo conversions) that

    * writes each checkpoint atomically (temporary file, fsync, rename), then points
      ``last_checkpoint`` at it, itself atomically: a crash at any moment leaves the previous
      checkpoint and ``last_checkpoint`` valid, and ``last_checkpoint`` never names a partial file;
    * reads ``.pth`` files (and ``.pyth``, and URLs, once downloaded) with
      ``torch.load(weights_only=True)`` and ``.pkl`` files with a restricted unpickler, so that a
      malicious file raises UnsafeCheckpointError instead of running code.

    ``save_dir`` must be a local directory.
    """

    def save(self, name: str, **kwargs: Any) -> None:
        """Write model, checkpointables and `kwargs` to ``<save_dir>/<name>.pth``, atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        write_atomically(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Point ``<save_dir>/last_checkpoint`` at a complete checkpoint file, atomically."""
        write_atomically(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
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
