"""
The model's input of an image at test time, resized by Detectron2's test augmentations
(`detection_utils.build_augmentation(cfg, is_train=False)`: ResizeShortestEdge to
INPUT.MIN_SIZE_TEST and INPUT.MAX_SIZE_TEST), as its test DatasetMapper and DefaultPredictor
resize one; shared by the export (ltm_d2/deploy/export.py) and tiled detection
(ltm_d2/tiling/prediction.py).
"""

from typing import Dict, Sequence

import numpy as np
import torch

from detectron2.data import transforms as T

__all__ = ["model_input"]


def model_input(
    image: np.ndarray, height: int, width: int, augmentations: Sequence[T.Augmentation]
) -> Dict:
    """
    Args:
        image: (H, W, C) pixels in INPUT.FORMAT, of any dtype that Detectron2's transforms take.
        height, width: the size the detections are wanted at (the original image's), which the
            model's `detector_postprocess` rescales them to.
        augmentations: the test resize, `build_augmentation(cfg, is_train=False)`, or none for a
            model that resizes its inputs itself.
    Returns:
        {"image": (C, H', W') tensor of the image's dtype, "height": height, "width": width}.
    """
    aug_input = T.AugInput(image)
    T.AugmentationList(augmentations)(aug_input)
    resized = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
    return {"image": resized, "height": height, "width": width}
