"""Skipping training images that cannot be read, and counting them (issue 8)."""
import ctypes
import logging
import multiprocessing as mp
from typing import Sequence

import numpy as np

from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import SizeMismatchError

logger = logging.getLogger(__name__)


class SkippedImages:
    """
    The set of training images found unreadable, in shared memory: the data-loader workers that
    find them (forked or spawned) mark them, the main process counts them. Images are told apart
    by file name.
    """

    def __init__(self, file_names: Sequence[str]):
        self._index = {name: i for i, name in enumerate(dict.fromkeys(file_names))}
        self._marked = mp.Array(ctypes.c_bool, len(self._index))

    @property
    def num_images(self) -> int:
        """The number of distinct images of the training set."""
        return len(self._index)

    @property
    def count(self) -> int:
        """The number of distinct images marked so far."""
        return int(np.count_nonzero(np.frombuffer(self._marked.get_obj(), dtype=np.bool_)))

    def mark(self, file_name: str) -> bool:
        """Mark an image as unreadable; returns True the first time it is marked."""
        i = self._index[file_name]
        with self._marked.get_lock():
            first = not self._marked[i]
            self._marked[i] = True
        return first


class SkippingDatasetMapper(DatasetMapper):
    """
    Detectron2's training :class:`DatasetMapper`, which skips an image it cannot use instead of
    ending the run: a missing, truncated or undecodable file, or one whose size differs from the
    dataset's. The image is marked in `skipped` and logged the first time; the mapper returns
    None, on which Detectron2's `MapDataset` maps another image, so batches stay full.
    """

    def __init__(self, cfg, skipped: SkippedImages):
        super().__init__(cfg, is_train=True)
        self.skipped = skipped

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SizeMismatchError) as e:
            file_name = dataset_dict["file_name"]
            if self.skipped.mark(file_name):
                logger.warning(
                    f"Skipping image {file_name} (image id {dataset_dict.get('image_id')}) "
                    f"in training: {type(e).__name__}: {e}"
                )
            return None
