"""
Images larger than the network input cut into overlapping square windows, in pixels of the
original image (INPUT.TILING.*): the windows (:func:`tile_windows`), the boxes seen in a window
(:func:`cut_boxes`), and the training records of the tiles of a dataset's big images
(:func:`tile_records`).
"""

import logging
from typing import Dict, List, Sequence, Tuple

import numpy as np

from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

__all__ = ["tile_windows", "cut_boxes", "tile_records"]

# Annotation keys of geometry other than the box; not carried into tiles (this project detects
# boxes only, and its mapper drops them in any case).
_UNTILED_KEYS = ("segmentation", "keypoints")


def _starts(length: int, size: int, stride: int) -> np.ndarray:
    """Start offsets of windows of `size` every `stride` pixels along an axis of `length`, the
    last one shifted to end at the border; a single 0 when the axis is not longer than `size`."""
    if length <= size:
        return np.zeros(1, dtype=np.int64)
    return np.append(np.arange(0, length - size, stride), length - size)


def tile_windows(height: int, width: int, size: int, overlap: float) -> np.ndarray:
    """
    Square windows of side `size` that cover an image, neighbours sharing `overlap` of their side
    (rounded to whole pixels); the last row and column are shifted to end at the image's border.
    Along a side not longer than `size`, the window spans the whole side, so an image not larger
    than `size` has one window: the whole image.

    Returns:
        (T, 4) int64 XYXY windows, row by row (top to bottom, each left to right).
    """
    if size <= 0 or not 0 <= overlap < 1:
        raise ValueError(f"Tiles need size > 0 and 0 <= overlap < 1, got {size}, {overlap}")
    stride = max(1, int(round(size * (1 - overlap))))
    ys, xs = np.meshgrid(_starts(height, size, stride), _starts(width, size, stride), indexing="ij")
    x1, y1 = xs.reshape(-1), ys.reshape(-1)  # (T,)
    return np.stack([x1, y1, np.minimum(x1 + size, width), np.minimum(y1 + size, height)], axis=1)


def cut_boxes(
    boxes: np.ndarray, window: Sequence[int], min_visible: float
) -> Tuple[np.ndarray, np.ndarray]:
    """
    The boxes seen in a window: a box is kept when at least `min_visible` of its area (and some
    area at all) lies inside the window, and then clipped to it; boxes of no area are dropped.

    Args:
        boxes: (N, 4) XYXY boxes in image pixels.
        window: x1, y1, x2, y2 of the window in image pixels.
        min_visible: the least share of a box's area inside the window for it to be kept.
    Returns:
        the (K,) indices of the kept boxes into `boxes`, and their (K, 4) XYXY clipped boxes
        relative to the window's top-left corner.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    low = np.asarray(window[:2], dtype=np.float64)
    high = np.asarray(window[2:], dtype=np.float64)
    clipped = np.clip(boxes, np.tile(low, 2), np.tile(high, 2))  # (N, 4)
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)  # (N,)
    inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)  # (N,)
    keep = np.flatnonzero((inside > 0) & (inside >= min_visible * area))
    return keep, clipped[keep] - np.tile(low, 2)


def _xyxy_boxes(annotations: List[Dict]) -> np.ndarray:
    """(N, 4) XYXY_ABS boxes of annotations given in any absolute BoxMode."""
    boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
    modes = np.array([int(a["bbox_mode"]) for a in annotations], dtype=np.int64)
    for mode in np.unique(modes):
        rows = modes == mode
        boxes[rows] = BoxMode.convert(boxes[rows], BoxMode(int(mode)), BoxMode.XYXY_ABS)
    return boxes


def _tile_record(record: Dict, window: np.ndarray, boxes: np.ndarray, min_visible: float) -> Dict:
    """The record of one window of `record`'s image, whose annotations have XYXY `boxes`."""
    x1, y1, x2, y2 = (int(v) for v in window)
    tile = dict(record, tile=[x1, y1, x2, y2], height=y2 - y1, width=x2 - x1)
    if "annotations" in record:
        keep, clipped = cut_boxes(boxes, window, min_visible)
        annotations = [record["annotations"][i] for i in keep]
        tile["annotations"] = [
            {
                **{k: v for k, v in a.items() if k not in _UNTILED_KEYS},
                "bbox": box.tolist(),
                "bbox_mode": BoxMode.XYXY_ABS,
            }
            for a, box in zip(annotations, clipped)
        ]
    return tile


def tile_records(records: List[Dict], size: int, overlap: float, min_visible: float) -> List[Dict]:
    """
    Detectron2 dataset records with every image larger than a tile (in height or width) replaced
    by one record per window of :func:`tile_windows`: the same record with "tile" [x1, y1, x2, y2]
    (the window, in image pixels), "height" and "width" of the window, and its annotations cut by
    :func:`cut_boxes` (boxes clipped, XYXY_ABS relative to the window; other keys kept, but
    "segmentation" and "keypoints" dropped). Records of images not larger than a tile are
    returned unchanged.

    Tiles without any object are kept, so that background can be learnt: whether they are
    trained on is for Detectron2's DATALOADER.FILTER_EMPTY_ANNOTATIONS to decide, as for whole
    images (build_checked_train_loader applies it after tiling).
    """
    tiled: List[Dict] = []
    num_tiled_images = 0
    for record in records:
        height, width = record["height"], record["width"]
        if height <= size and width <= size:
            tiled.append(record)
            continue
        num_tiled_images += 1
        boxes = _xyxy_boxes(record.get("annotations", []))
        tiled.extend(
            _tile_record(record, window, boxes, min_visible)
            for window in tile_windows(height, width, size, overlap)
        )
    num_tiles = len(tiled) - (len(records) - num_tiled_images)
    logger.info(
        f"Tiling: {num_tiles} tiles of {size} px (overlap {overlap}) made from {num_tiled_images} "
        f"images larger than a tile; {len(records) - num_tiled_images} images used whole."
    )
    return tiled
