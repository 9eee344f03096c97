"""
The training augmentations of a config: Detectron2's (the INPUT.MIN_SIZE_TRAIN resize, the
INPUT.RANDOM_FLIP flip, INPUT.CROP), and those INPUT.AUGMENT adds, all Detectron2 transforms:
vertical flips, rotations by multiples of 90 degrees, large-scale jitter, brightness, contrast and
saturation; and the check of the INPUT.AUGMENT keys before training.
"""

import math
from typing import List

import numpy as np

from detectron2.data import detection_utils
from detectron2.data import transforms as T

from ..errors import UserError

__all__ = [
    "RandomSaturation",
    "RandomVerticalFlip",
    "training_augmentations",
    "check_augmentations",
]

# The keys of INPUT.AUGMENT that are a range (low, high) of factors applied to the pixels.
_PHOTOMETRIC = ("BRIGHTNESS", "CONTRAST", "SATURATION")
# The image formats (INPUT.FORMAT) of three colour channels that saturation applies to.
_COLOUR_FORMATS = ("BGR", "RGB")


class RandomSaturation(T.RandomSaturation):
    """
    Detectron2's RandomSaturation, which blends an image with its gray computed from channels in
    RGB order, for an image in `image_format` (INPUT.FORMAT "RGB" or "BGR"): the channels of a BGR
    image are read reversed for the gray, so that the gray is the image's luminance in both.
    """

    def __init__(self, intensity_min: float, intensity_max: float, image_format: str):
        super().__init__(intensity_min, intensity_max)
        self.image_format = image_format

    def get_transform(self, image: np.ndarray) -> T.Transform:
        rgb = image[..., ::-1] if self.image_format == "BGR" else image  # (H, W, 3)
        return super().get_transform(rgb)  # a blend with the gray, the same on every channel


class NumpyVFlipTransform(T.VFlipTransform):
    """fvcore's vertical flip, by NumPy: the same pixels, without torch's warning on the read-only
    arrays that Detectron2's resize returns."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.flip(img, axis=0 if img.ndim == 2 else -3)  # (H, W) or (..., H, W, C)


class RandomVerticalFlip(T.RandomFlip):
    """Detectron2's RandomFlip upside down with probability `prob`, flipping by NumPy."""

    def __init__(self, prob: float = 0.5):
        super().__init__(prob, horizontal=False, vertical=True)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        transform = super().get_transform(image)  # the same random draw as RandomFlip's
        return (
            NumpyVFlipTransform(transform.height)
            if isinstance(transform, T.VFlipTransform)
            else transform
        )


def training_augmentations(cfg) -> List[T.Augmentation]:
    """
    The augmentations of a training image (or tile), in order: those of Detectron2's training
    DatasetMapper (INPUT.CROP's RandomCrop when enabled, then `build_augmentation(cfg, True)`:
    ResizeShortestEdge and INPUT.RANDOM_FLIP's RandomFlip), then those INPUT.AUGMENT turns on:

    - SCALE_JITTER (low, high): ResizeScale to a square of SCALE_JITTER_SIZE times a factor in
      [low, high], then FixedSizeCrop to that square, in place of ResizeShortestEdge;
    - VERTICAL_FLIP: :class:`RandomVerticalFlip`, with probability 0.5;
    - ROTATE_90: RandomRotation by 0, 90, 180 or 270 degrees (with expand, so nothing is cut; for
      these angles Detectron2's RotationTransform moves pixels and box corners exactly);
    - BRIGHTNESS, CONTRAST, SATURATION (low, high): RandomBrightness, RandomContrast,
      :class:`RandomSaturation` with a factor drawn in [low, high].

    With INPUT.AUGMENT at its defaults, the list is Detectron2's own.
    """
    augmentation = detection_utils.build_augmentation(cfg, is_train=True)
    if cfg.INPUT.CROP.ENABLED:  # as Detectron2's DatasetMapper.from_config does
        augmentation.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    keys = cfg.INPUT.AUGMENT
    if keys.SCALE_JITTER:
        size = keys.SCALE_JITTER_SIZE
        resize = next(i for i, a in enumerate(augmentation) if isinstance(a, T.ResizeShortestEdge))
        augmentation[resize : resize + 1] = [
            T.ResizeScale(*keys.SCALE_JITTER, target_height=size, target_width=size),
            T.FixedSizeCrop((size, size)),
        ]
    if keys.VERTICAL_FLIP:
        augmentation.append(RandomVerticalFlip())
    if keys.ROTATE_90:
        augmentation.append(T.RandomRotation([0, 90, 180, 270], expand=True, sample_style="choice"))
    if keys.BRIGHTNESS:
        augmentation.append(T.RandomBrightness(*keys.BRIGHTNESS))
    if keys.CONTRAST:
        augmentation.append(T.RandomContrast(*keys.CONTRAST))
    if keys.SATURATION:
        augmentation.append(RandomSaturation(*keys.SATURATION, cfg.INPUT.FORMAT))
    return augmentation


def _is_range(value, least: float, open_below: bool) -> bool:
    """Whether `value` is two finite numbers low <= high with low >= `least` (> when
    `open_below`)."""
    if len(value) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        return False
    low, high = value
    return (low > least if open_below else low >= least) and low <= high


def check_augmentations(cfg) -> None:
    """A UserError for INPUT.AUGMENT values that :func:`training_augmentations` cannot use: a
    range that is not (low, high) of allowed factors, large-scale jitter without its size or
    with INPUT.CROP as well, saturation of an image without colour channels."""
    keys = cfg.INPUT.AUGMENT
    for key in _PHOTOMETRIC:
        value = keys[key]
        if value and not _is_range(value, 0.0, open_below=False):
            raise UserError(
                f"INPUT.AUGMENT.{key} {tuple(value)}: expected () (off) or a range of factors "
                "(low, high) with 0 <= low <= high, 1 keeping the image, e.g. "
                f"INPUT.AUGMENT.{key} '(0.8, 1.2)'."
            )
    if keys.SATURATION and cfg.INPUT.FORMAT not in _COLOUR_FORMATS:
        raise UserError(
            f"INPUT.AUGMENT.SATURATION with INPUT.FORMAT {cfg.INPUT.FORMAT!r}: saturation needs "
            f"colour channels ({' or '.join(_COLOUR_FORMATS)}); set INPUT.AUGMENT.SATURATION '()'."
        )
    jitter, size = keys.SCALE_JITTER, keys.SCALE_JITTER_SIZE
    if not jitter:
        if size:
            raise UserError(
                f"INPUT.AUGMENT.SCALE_JITTER_SIZE {size} without INPUT.AUGMENT.SCALE_JITTER has "
                "no effect: set the range of scales too, e.g. INPUT.AUGMENT.SCALE_JITTER "
                "'(0.5, 2.0)', or leave SCALE_JITTER_SIZE at 0."
            )
        return
    if not _is_range(jitter, 0.0, open_below=True):
        raise UserError(
            f"INPUT.AUGMENT.SCALE_JITTER {tuple(jitter)}: expected () (off) or a range of scales "
            "(low, high) with 0 < low <= high, e.g. INPUT.AUGMENT.SCALE_JITTER '(0.5, 2.0)'."
        )
    if not isinstance(size, int) or size <= 0:
        raise UserError(
            f"INPUT.AUGMENT.SCALE_JITTER_SIZE {size}: large-scale jitter needs the side in pixels "
            "of its square training input, e.g. INPUT.AUGMENT.SCALE_JITTER_SIZE 800."
        )
    if cfg.INPUT.CROP.ENABLED:
        raise UserError(
            "INPUT.AUGMENT.SCALE_JITTER with INPUT.CROP.ENABLED: both crop the training image; "
            "keep one (INPUT.CROP.ENABLED False, or INPUT.AUGMENT.SCALE_JITTER '()')."
        )
