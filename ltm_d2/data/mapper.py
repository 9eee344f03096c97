"""
The project's dataset mappers: training skips (and counts) the images it cannot read, evaluation
marks them; a training record of a tile is read through ltm_d2/tiling/reading.py; images over
PIL's pixel limit are read with tiling and refused without.
"""

import copy
import logging
import os
import weakref
from multiprocessing import shared_memory
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.data.detection_utils import SizeMismatchError

from ..tiling.reading import TILE_IMAGE_CACHE_BYTES, DecodedImages, check_image_pixels, read_tile
from .augmentation import training_augmentations
from .validation import DatasetError, check_image_file_mode, large_images_allowed

logger = logging.getLogger(__name__)

# The key of a test record whose image could not be used; its value says why.
UNREADABLE = "unreadable"


class SkippedImages:
    """
    The set of training images found unreadable, in shared memory: the data-loader workers that
    find them mark them, the main process counts them. Images are told apart by file name.

    Workers get the set pickled, by Detectron2's cloudpickle when they are spawned (as on macOS,
    and from Python 3.14 on Linux) or inherit it when forked: it pickles as the name of its block
    of shared memory (Python's `multiprocessing.shared_memory`), which a worker opens again, so
    every process marks the same bytes. The process that made the block removes it.
    """

    def __init__(self, file_names: Sequence[str]):
        self._index = {name: i for i, name in enumerate(dict.fromkeys(file_names))}
        self._memory = shared_memory.SharedMemory(create=True, size=max(1, len(self._index)))
        self._memory.buf[: len(self._index)] = bytes(len(self._index))
        weakref.finalize(self, _release, self._memory, os.getpid())

    def __getstate__(self):
        return {"index": self._index, "name": self._memory.name}

    def __setstate__(self, state):
        self._index = state["index"]
        self._memory = shared_memory.SharedMemory(name=state["name"])
        weakref.finalize(self, self._memory.close)

    @property
    def num_images(self) -> int:
        """The number of distinct images of the training set."""
        return len(self._index)

    @property
    def count(self) -> int:
        """The number of distinct images marked so far."""
        return int(np.count_nonzero(np.frombuffer(self._memory.buf, np.uint8)[: self.num_images]))

    def mark(self, file_name: str) -> bool:
        """Mark an image as unreadable; returns True the first time it is marked (two workers
        marking one image at the same instant may both see a first time: it is then logged
        twice, and counted once)."""
        i = self._index[file_name]
        first = self._memory.buf[i] == 0
        self._memory.buf[i] = 1
        return first


def _release(memory: shared_memory.SharedMemory, owner: int) -> None:
    """Close a block of shared memory, and remove it in the process that made it."""
    memory.close()
    if os.getpid() == owner:
        memory.unlink()


class SkippingDatasetMapper(DatasetMapper):
    """
    Detectron2's training :class:`DatasetMapper`, with the augmentations of
    ltm_d2/data/augmentation.py :func:`training_augmentations` (Detectron2's, and those
    INPUT.AUGMENT adds), which skips an image it cannot use instead of ending the run: a missing,
    truncated or undecodable file, or one whose size differs from the dataset's. The image is
    marked in `skipped` and logged the first time; the mapper returns None, on which Detectron2's
    `MapDataset` maps another image, so batches stay full. An image of 16-bit or floating-point
    pixels, which Detectron2 would read clipped to 0..255, stops the run instead with a
    DatasetError naming it (validation.check_image_mode).

    A record with a "tile" [x1, y1, x2, y2] (ltm_d2/tiling/cutting.py) is of that window of its
    image: its pixels are read by ltm_d2/tiling/reading.py :func:`read_tile` before the
    augmentations, and checked against the record's height and width, which are the window's.
    The decoded images of tiles are kept (:class:`DecodedImages`, TILE_IMAGE_CACHE_BYTES in each
    process), so that the tiles of an image that follow one another are cut from one decoding.
    With tiling, images over PIL's pixel limit are read without its warning or error; without,
    such an image stops the run with an ImageTooLargeError (ltm_d2/tiling/reading.py) that names
    it.
    """

    @configurable
    def __init__(
        self, is_train: bool = True, *, skipped: SkippedImages, tiling: bool = False, **kwargs
    ):
        """
        Args:
            skipped: where the images found unreadable are marked.
            tiling: whether records may be tiles (INPUT.TILING.SIZE > 0).
            is_train, kwargs: the arguments of :class:`DatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        self.skipped = skipped
        self.tiling = tiling
        self._modes_checked = set()
        self._tile_images = DecodedImages(TILE_IMAGE_CACHE_BYTES)

    @classmethod
    def from_config(cls, cfg, skipped: SkippedImages):
        """DatasetMapper's training arguments of `cfg`, the augmentations those of
        :func:`training_augmentations`."""
        ret = super().from_config(cfg, is_train=True)
        ret.update(
            skipped=skipped,
            tiling=cfg.INPUT.TILING.SIZE > 0,
            augmentations=training_augmentations(cfg),
        )
        return ret

    def _check_mode(self, dataset_dict) -> None:
        """A DatasetError for an image not of 8 bits per channel (validation.check_image_file_mode),
        which Detectron2 would read clipped; each file is checked once (by its header)."""
        file_name = dataset_dict["file_name"]
        if file_name in self._modes_checked:
            return
        check_image_file_mode(file_name, f"image id {dataset_dict.get('image_id')}")
        self._modes_checked.add(file_name)

    def __call__(self, dataset_dict):
        check_image_pixels(dataset_dict, self.tiling)
        try:
            with large_images_allowed(self.tiling):
                self._check_mode(dataset_dict)
                if "tile" in dataset_dict:
                    return self._map_tile(dataset_dict)
                return super().__call__(dataset_dict)
        except (OSError, SizeMismatchError) as e:
            file_name = dataset_dict["file_name"]
            if self.skipped.mark(file_name):
                logger.warning(
                    f"Skipping image {file_name} (image id {dataset_dict.get('image_id')}) "
                    f"in training: {type(e).__name__}: {e}"
                )
            return None

    def _map_tile(self, dataset_dict):
        """
        DatasetMapper.__call__ in training (without semantic segmentation and precomputed
        proposals, which this project does not use) of a tile's record: the tile's pixels come
        from :func:`read_tile` (a copy cut from the image kept decoded) before the size check and
        the augmentations, which thus never change the kept image; the annotations are already
        relative to the tile.
        """
        dataset_dict = copy.deepcopy(dataset_dict)  # it will be modified by code below
        aug_input = T.AugInput(read_tile(dataset_dict, self._tile_images, self.image_format))
        utils.check_image_size(dataset_dict, aug_input.image)  # an image smaller than expected
        transforms = self.augmentations(aug_input)
        image = aug_input.image  # (H, W, C)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict


class MarkingTestDatasetMapper(DatasetMapper):
    """
    Detectron2's test :class:`DatasetMapper` (its arguments), which does not end an
    evaluation on an image it cannot use (missing, truncated or undecodable, of another size than
    the dataset's, not of 8 bits per channel, or over PIL's pixel limit without tiling): it
    returns the record's "file_name", "image_id", "height" and "width" with UNREADABLE saying why,
    and no "image". :class:`ltm_d2.evaluation.SkippingUnreadableImages` leaves such images out of
    the evaluation. With tiling, images over PIL's pixel limit are read without its warning.
    """

    @configurable
    def __init__(self, is_train: bool = False, *, tiling: bool = False, **kwargs):
        """
        Args:
            tiling: whether images over PIL's pixel limit are read (INPUT.TILING.SIZE > 0).
            is_train, kwargs: the arguments of :class:`DatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        self.tiling = tiling

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg, is_train=False)
        ret["tiling"] = cfg.INPUT.TILING.SIZE > 0
        return ret

    def __call__(self, dataset_dict):
        try:
            check_image_pixels(dataset_dict, self.tiling)
            with large_images_allowed(self.tiling):
                check_image_file_mode(
                    dataset_dict["file_name"], f"image id {dataset_dict['image_id']}"
                )
                return super().__call__(dataset_dict)
        except (
            OSError,
            SyntaxError,
            SizeMismatchError,
            DatasetError,
            Image.DecompressionBombError,
        ) as e:
            kept = {
                k: dataset_dict[k]
                for k in ("file_name", "image_id", "height", "width")
                if k in dataset_dict
            }
            return {**kept, UNREADABLE: f"{type(e).__name__}: {e}"}
