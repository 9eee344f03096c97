"""
Training augmentations (ltm_d2/data/augmentation.py): Detectron2's own by default, each
INPUT.AUGMENT key adds its Detectron2 transform, a box stays on its object through each of them in
the training mapper (whole images and tiles), and values they cannot use are refused before
training.
"""

import os
import warnings

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetMapper, detection_utils
from detectron2.data import transforms as T

from ltm_d2 import load_config
from ltm_d2.data.augmentation import (
    RandomSaturation,
    RandomVerticalFlip,
    check_augmentations,
    training_augmentations,
)
from ltm_d2.data.mapper import SkippedImages, SkippingDatasetMapper
from ltm_d2.errors import UserError
from ltm_d2.tiling.cutting import tile_records, tile_windows

from support import REPO, record_of, run, tiny_cfg

CONFIGS = [
    "Base-LTM.yaml",
    "COCO-Detection/ltm_R_101_FPN_2x_ms.yaml",
    "Own-Data/ltm_R_18_FPN_scratch.yaml",
    "Shapes-Detection/ltm_R_18_FPN_tiny.yaml",
]
RANGE = "(0.5, 1.5)"
# Each key of INPUT.AUGMENT set, and the training augmentations of the tiny config it gives.
KEYS = {
    "vertical_flip": (
        ("INPUT.AUGMENT.VERTICAL_FLIP", "True"),
        [T.ResizeShortestEdge, T.RandomFlip, RandomVerticalFlip],
    ),
    "rotate_90": (
        ("INPUT.AUGMENT.ROTATE_90", "True"),
        [T.ResizeShortestEdge, T.RandomFlip, T.RandomRotation],
    ),
    "scale_jitter": (
        ("INPUT.AUGMENT.SCALE_JITTER", "(0.5, 2.0)", "INPUT.AUGMENT.SCALE_JITTER_SIZE", "128"),
        [T.ResizeScale, T.FixedSizeCrop, T.RandomFlip],
    ),
    "brightness": (
        ("INPUT.AUGMENT.BRIGHTNESS", RANGE),
        [T.ResizeShortestEdge, T.RandomFlip, T.RandomBrightness],
    ),
    "contrast": (
        ("INPUT.AUGMENT.CONTRAST", RANGE),
        [T.ResizeShortestEdge, T.RandomFlip, T.RandomContrast],
    ),
    "saturation": (
        ("INPUT.AUGMENT.SATURATION", RANGE),
        [T.ResizeShortestEdge, T.RandomFlip, RandomSaturation],
    ),
}
TILE = 128


@pytest.mark.parametrize("config", CONFIGS)
def test_the_default_training_augmentations_are_detectron2s(config):
    cfg = load_config(os.path.join(REPO, "configs", config))
    expected = detection_utils.build_augmentation(cfg, is_train=True)
    assert repr(training_augmentations(cfg)) == repr(expected)


@pytest.mark.parametrize("opts", [(), ("INPUT.CROP.ENABLED", "True")], ids=["plain", "crop"])
def test_the_training_mapper_augments_as_detectron2s_by_default(opts):
    cfg = tiny_cfg(*opts)
    mapper = SkippingDatasetMapper(cfg, SkippedImages([]))
    expected = DatasetMapper(cfg, is_train=True).augmentations.augs
    assert repr(mapper.augmentations.augs) == repr(expected)


@pytest.mark.parametrize("key", KEYS)
def test_each_key_adds_its_augmentation(key):
    opts, expected = KEYS[key]
    assert [type(a) for a in training_augmentations(tiny_cfg(*opts))] == expected


def test_the_vertical_flip_is_upside_down_beside_the_horizontal_flip():
    *_, horizontal, vertical = training_augmentations(tiny_cfg(*KEYS["vertical_flip"][0]))
    assert (horizontal.horizontal, horizontal.vertical) == (True, False)
    assert (vertical.horizontal, vertical.vertical) == (False, True)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_the_vertical_flip_flips_a_read_only_image_as_detectron2s_without_a_warning(shape):
    image = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    image.flags.writeable = False  # as Detectron2's resize returns it
    flip = RandomVerticalFlip(prob=1.0).get_transform(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flipped = flip.apply_image(image)
    assert np.array_equal(flipped, T.VFlipTransform(shape[0]).apply_image(image.copy()))
    assert np.array_equal(flip.apply_coords(np.array([[1.0, 1.0]])), [[1.0, 4.0]])


def test_the_vertical_flip_draws_as_detectron2s():
    image = np.zeros((4, 4, 3), np.uint8)
    np.random.seed(0)
    ours = [type(RandomVerticalFlip().get_transform(image)).__name__ for _ in range(20)]
    np.random.seed(0)
    theirs = [
        type(T.RandomFlip(horizontal=False, vertical=True).get_transform(image)).__name__
        for _ in range(20)
    ]
    assert [n != "NoOpTransform" for n in ours] == [n != "NoOpTransform" for n in theirs]
    assert 0 < ours.count("NoOpTransform") < 20


@pytest.mark.parametrize("size", [(61, 90), (64, 91)])
@pytest.mark.parametrize("angle", [90, 180, 270])
def test_a_rotation_by_a_multiple_of_90_degrees_moves_pixels_and_box_corners_exactly(size, angle):
    height, width = size
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rotation = T.RotationTransform(height, width, angle, expand=True)
    assert np.array_equal(rotation.apply_image(image), np.rot90(image, angle // 90))
    box = np.array([[10.0, 20.0, 37.0, 45.0]])
    expected = {  # np.rot90 turns counter-clockwise: (x, y) -> (y, width - x) for 90 degrees
        90: [20, width - 37, 45, width - 10],
        180: [width - 37, height - 45, width - 10, height - 20],
        270: [height - 45, 10, height - 20, 37],
    }[angle]
    np.testing.assert_allclose(rotation.apply_box(box)[0], expected, atol=1e-9)


@pytest.mark.parametrize("image_format, red", [("BGR", (0, 0, 255)), ("RGB", (255, 0, 0))])
def test_saturation_grays_an_image_to_its_luminance_in_either_channel_order(image_format, red):
    image = np.array([[red]], dtype=np.uint8)  # (1, 1, 3)
    gray = RandomSaturation(0.0, 0.0, image_format).get_transform(image).apply_image(image)
    assert gray.tolist() == [[[76, 76, 76]]]  # 0.299 x 255, the luminance of pure red


def rectangle_record(folder, tiled):
    """The record of an image of a white rectangle on black, its box the rectangle's, which holds
    the centre of the image or, `tiled`, of the last of its TILE px tiles (that tile's record),
    off-centre so that every flip and rotation moves it; a scale jitter up to 2 keeps the
    centre in its square crop, so the rectangle stays in view."""
    size = (200, 240) if tiled else (96, 128)
    window = tile_windows(*size, TILE, 0.2)[-1] if tiled else (0, 0, size[1], size[0])
    x, y = (window[0] + window[2]) // 2, (window[1] + window[3]) // 2
    x1, y1, x2, y2 = x - 30, y - 22, x + 20, y + 12
    image = np.zeros((*size, 3), dtype=np.uint8)
    image[y1:y2, x1:x2] = 255
    path = os.path.join(folder, "rectangle.png")
    cv2.imwrite(path, image)
    record = record_of([[x1, y1, x2, y2]], size, file_name=path)
    return tile_records([record], TILE, 0.2, 0.5)[-1] if tiled else record


def rectangle_bounds(image):
    """XYXY bounds of the rectangle's pixels, the brightest, in a (C, H, W) image: those above
    3/4 of the brightest (the padding of FixedSizeCrop, 128, and the background lie below)."""
    level = image.sum(axis=0)  # (H, W)
    ys, xs = np.nonzero(level > 0.75 * level.max())
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


@pytest.mark.parametrize("tiled", [False, True], ids=["image", "tile"])
@pytest.mark.parametrize("key", KEYS)
def test_the_box_tightly_bounds_its_rectangle_after_each_augmentation(tmp_path, key, tiled):
    cfg = tiny_cfg(
        *KEYS[key][0],
        "INPUT.RANDOM_FLIP",
        "none",  # the key's augmentation alone, after a resize by 1.25 (image) or 0.94 (tile)
        "INPUT.MIN_SIZE_TRAIN",
        "(120,)",
        "INPUT.MAX_SIZE_TRAIN",
        "200",
        "INPUT.TILING.SIZE",
        str(TILE if tiled else 0),
    )
    record = rectangle_record(str(tmp_path), tiled)
    mapper = SkippingDatasetMapper(cfg, SkippedImages([record["file_name"]]))
    images = set()
    for seed in range(8):
        np.random.seed(seed)
        mapped = mapper(record)
        image = mapped["image"].numpy()
        (box,) = mapped["instances"].gt_boxes.tensor.numpy()
        np.testing.assert_allclose(box, rectangle_bounds(image), atol=1.0, err_msg=f"seed {seed}")
        images.add(image.tobytes())
    assert len(images) > 1  # the augmentation changed the image


VALID = (
    "INPUT.AUGMENT.VERTICAL_FLIP",
    "True",
    "INPUT.AUGMENT.ROTATE_90",
    "True",
    "INPUT.AUGMENT.SCALE_JITTER",
    "(0.1, 2.0)",
    "INPUT.AUGMENT.SCALE_JITTER_SIZE",
    "800",
    "INPUT.AUGMENT.BRIGHTNESS",
    "(0.8, 1.2)",
    "INPUT.AUGMENT.CONTRAST",
    "(0, 1)",
    "INPUT.AUGMENT.SATURATION",
    "(1.0, 1.0)",
)


def test_every_key_at_a_usable_value_passes_the_check():
    check_augmentations(tiny_cfg(*VALID))


@pytest.mark.parametrize(
    "opts, message",
    [
        (
            ("INPUT.AUGMENT.BRIGHTNESS", "(1.2, 0.8)"),
            "INPUT.AUGMENT.BRIGHTNESS (1.2, 0.8): expected () (off) or a range of factors",
        ),
        (("INPUT.AUGMENT.CONTRAST", "(-0.5, 1.0)"), "INPUT.AUGMENT.CONTRAST (-0.5, 1.0): expected"),
        (("INPUT.AUGMENT.SATURATION", "(0.8,)"), "INPUT.AUGMENT.SATURATION (0.8,): expected"),
        (("INPUT.AUGMENT.BRIGHTNESS", "('a', 'b')"), "INPUT.AUGMENT.BRIGHTNESS ('a', 'b'): expec"),
        (
            ("INPUT.AUGMENT.SATURATION", "(0.8, 1.2)", "INPUT.FORMAT", "L"),
            "INPUT.AUGMENT.SATURATION with INPUT.FORMAT 'L': saturation needs colour channels",
        ),
        (
            ("INPUT.AUGMENT.SCALE_JITTER", "(0.0, 2.0)", "INPUT.AUGMENT.SCALE_JITTER_SIZE", "128"),
            "INPUT.AUGMENT.SCALE_JITTER (0.0, 2.0): expected () (off) or a range of scales",
        ),
        (
            ("INPUT.AUGMENT.SCALE_JITTER", "(0.5, 2.0)"),
            "INPUT.AUGMENT.SCALE_JITTER_SIZE 0: large-scale jitter needs the side",
        ),
        (
            ("INPUT.AUGMENT.SCALE_JITTER_SIZE", "128"),
            "INPUT.AUGMENT.SCALE_JITTER_SIZE 128 without INPUT.AUGMENT.SCALE_JITTER has no effect",
        ),
        (
            (
                *("INPUT.AUGMENT.SCALE_JITTER", "(0.5, 2.0)", "INPUT.AUGMENT.SCALE_JITTER_SIZE"),
                *("128", "INPUT.CROP.ENABLED", "True"),
            ),
            "INPUT.AUGMENT.SCALE_JITTER with INPUT.CROP.ENABLED: both crop the training image",
        ),
    ],
    ids=[
        "low-above-high",
        "negative",
        "one-number",
        "not-numbers",
        "saturation-of-gray",
        "zero-scale",
        "jitter-without-size",
        "size-without-jitter",
        "two-crops",
    ],
)
def test_a_value_the_augmentations_cannot_use_is_refused_with_what_to_do(opts, message):
    with pytest.raises(UserError) as error:
        check_augmentations(tiny_cfg(*opts))
    assert str(error.value).startswith(message)


@pytest.mark.slow
def test_train_net_trains_with_every_augmentation_and_logs_them(tmp_path):
    out = str(tmp_path / "augmented")
    log = run(
        *VALID,
        "INPUT.AUGMENT.SCALE_JITTER_SIZE",
        "128",
        "OUTPUT_DIR",
        out,
        "DATASETS.TEST",
        "()",
        "SOLVER.MAX_ITER",
        "2",
        "SEED",
        "1",
    )
    assert (
        "Augmentations used in training: [ResizeScale(min_scale=0.1, max_scale=2.0, "
        "target_height=128, target_width=128), FixedSizeCrop(crop_size=(128, 128)), RandomFlip(), "
        "RandomVerticalFlip(), RandomRotation(angle=[0, 90, 180, 270], "
        "sample_style='choice'), RandomBrightness(intensity_min=0.8, intensity_max=1.2), "
        "RandomContrast(intensity_min=0, intensity_max=1), "
        "RandomSaturation(intensity_min=1.0, intensity_max=1.0, image_format='BGR')]"
    ) in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
