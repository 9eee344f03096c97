"""
The pixels of a training tile (a record of ltm_d2/tiling/cutting.py with a "tile" window), cut
from its image kept decoded, and the refusal of images over PIL's pixel limit without tiling.
"""

from collections import OrderedDict
from typing import Callable, Dict

import numpy as np
from PIL import Image

from detectron2.data import detection_utils

from ..data.validation import DatasetError

__all__ = [
    "TILE_IMAGE_CACHE_BYTES",
    "ImageTooLargeError",
    "check_image_pixels",
    "DecodedImages",
    "read_tile",
]

# Bytes of decoded images the training mapper keeps for tiles, in each process that maps (each
# data-loader worker): a 12000 x 12000 RGB image takes 432 MB, so two of them are kept. While it
# decodes another image, a process holds that image too.
TILE_IMAGE_CACHE_BYTES = 1 << 30


class ImageTooLargeError(DatasetError):
    """An image over PIL's pixel limit to be read whole (without tiling)."""


def check_image_pixels(record: Dict, tiling: bool) -> None:
    """
    Without `tiling` (INPUT.TILING.SIZE 0), an ImageTooLargeError for a record whose image
    ("height" x "width") is over PIL's pixel limit (`Image.MAX_IMAGE_PIXELS`, 89.5 megapixels by
    default): PIL would warn at every read of it, or refuse it above twice the limit, and read
    whole it would be shrunk to the network's input size, its objects with it. With tiling,
    images of any size are read (data/validation.py :func:`large_images_allowed`).
    """
    limit = Image.MAX_IMAGE_PIXELS
    height, width = record.get("height"), record.get("width")
    if tiling or limit is None or height is None or width is None:
        return
    if height * width > limit:
        raise ImageTooLargeError(
            f"image id {record.get('image_id')}: image {record['file_name']} is {width} x "
            f"{height} pixels ({height * width / 1e6:.1f} megapixels), over the "
            f"{limit / 1e6:.1f} megapixels PIL reads without a decompression-bomb warning, and "
            "read whole it would be shrunk to the network's input size; set INPUT.TILING.SIZE "
            "(e.g. 800; docs/own_data.md, 'Images larger than the network input') to train and "
            "detect on tiles of it at full resolution"
        )


class DecodedImages:
    """
    The decoded images most recently used, by file name, at most `max_bytes` of them in all
    (least recently used first out), but always the last one, whatever its size. The arrays are
    read-only: users crop copies of them.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._images: "OrderedDict[str, np.ndarray]" = OrderedDict()  # least recent first

    def get(self, file_name: str, read: Callable[[str], np.ndarray]) -> np.ndarray:
        """The image of `file_name`, from `read(file_name)` when not kept."""
        image = self._images.pop(file_name, None)
        if image is None:
            image = read(file_name)
            image.flags.writeable = False
        self._images[file_name] = image
        total = sum(kept.nbytes for kept in self._images.values())
        while len(self._images) > 1 and total > self.max_bytes:
            total -= self._images.popitem(last=False)[1].nbytes
        return image


def read_tile(record: Dict, images: DecodedImages, image_format: str) -> np.ndarray:
    """
    The pixels of `record`'s "tile" [x1, y1, x2, y2] of its image, as Detectron2's `read_image`
    returns the image in `image_format` (INPUT.FORMAT): the image is taken from `images`, decoded
    when not kept there, and the tile is a writable copy, so that augmentations applied to it in
    place never change the kept image.

    Returns:
        (y2 - y1, x2 - x1, C) array, or smaller should the file be smaller than the record says.
    """
    image = images.get(
        record["file_name"], lambda f: detection_utils.read_image(f, format=image_format)
    )  # (H, W, C) of the whole image, read-only
    x1, y1, x2, y2 = record["tile"]
    return image[y1:y2, x1:x2].copy()
