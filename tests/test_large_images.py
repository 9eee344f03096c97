"""Images over PIL's pixel limit: read with tiling, refused by name without. PIL's limit is
lowered to simulate images of hundreds of megapixels with small ones."""

import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ltm_d2.data.mapper import SkippedImages, SkippingDatasetMapper
from ltm_d2.data.tiling import (
    ImageTooLargeError,
    build_test_mapper,
    large_images_allowed,
    tile_records,
)

from support import tiny_cfg

HEIGHT, WIDTH = 256, 320  # 81,920 pixels
# PIL's limit (MAX_IMAGE_PIXELS) at which it warns at every read of the image, or refuses it.
LIMITS = {"warned": HEIGHT * WIDTH - 1, "refused": 1000}


@pytest.fixture
def image_file(tmp_path):
    """(path, BGR pixels) of a random HEIGHT x WIDTH PNG."""
    pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    path = str(tmp_path / "big.png")
    cv2.imwrite(path, pixels)
    return path, pixels


def record_of(path):
    return {"file_name": path, "image_id": 3, "height": HEIGHT, "width": WIDTH, "annotations": []}


def tiles_of(path):
    """The 9 tile records of 128 px of the image (overlap 0.2), row by row."""
    return tile_records([record_of(path)], 128, 0.2, 0.5)


def training_mapper(path, *opts):
    """The training mapper of the tiny config (128 px: tiles are not resized), without flips."""
    cfg = tiny_cfg("INPUT.RANDOM_FLIP", "none", *opts)
    return SkippingDatasetMapper(cfg, SkippedImages([path]))


@pytest.mark.parametrize("limit", LIMITS.values(), ids=LIMITS.keys())
def test_a_tiled_training_read_of_an_image_over_pils_limit_neither_warns_nor_fails(
    image_file, monkeypatch, limit
):
    path, _ = image_file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    mapper = training_mapper(path, "INPUT.TILING.SIZE", "128")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mapped = mapper(tiles_of(path)[0])
    assert mapped is not None and mapped["image"].shape == (3, 128, 128)
    assert Image.MAX_IMAGE_PIXELS == limit  # lifted for the project's reads only


@pytest.mark.parametrize("limit", LIMITS.values(), ids=LIMITS.keys())
def test_the_tiled_test_mapper_reads_an_image_over_pils_limit_without_warning(
    image_file, monkeypatch, limit
):
    path, pixels = image_file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    mapper = build_test_mapper(tiny_cfg("INPUT.TILING.SIZE", "128"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mapped = mapper(record_of(path))
    assert torch.equal(mapped["image"], torch.from_numpy(pixels).permute(2, 0, 1))


@pytest.mark.parametrize("loader", ["training", "test"])
def test_without_tiling_an_image_over_pils_limit_is_refused_naming_it(
    image_file, monkeypatch, loader
):
    path, _ = image_file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMITS["warned"])
    mapper = training_mapper(path) if loader == "training" else build_test_mapper(tiny_cfg())
    with pytest.raises(ImageTooLargeError) as error:
        mapper(record_of(path))
    message = str(error.value)
    assert f"image {path} is 320 x 256 pixels (0.1 megapixels)" in message
    assert "set INPUT.TILING.SIZE" in message


def test_pils_limit_is_lifted_inside_large_images_allowed_only(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with large_images_allowed():
        with large_images_allowed():
            assert Image.MAX_IMAGE_PIXELS is None
        assert Image.MAX_IMAGE_PIXELS is None  # the outer reader still reads
    assert Image.MAX_IMAGE_PIXELS == 1000
    with large_images_allowed(False):
        assert Image.MAX_IMAGE_PIXELS == 1000
