"""Images over PIL's pixel limit (read with tiling, refused by name without), and the decoded
images the tile mapper keeps so that consecutive tiles of an image are cut from one decoding.
PIL's limit is lowered to simulate images of hundreds of megapixels with small ones."""

import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import detection_utils
from detectron2.data import transforms as T

from ltm_d2.data import DatasetError
from ltm_d2.data.build import check_training_datasets
from ltm_d2.data.mapper import UNREADABLE, SkippedImages, SkippingDatasetMapper
from ltm_d2.data.validation import large_images_allowed
from ltm_d2.tiling.cutting import tile_records
from ltm_d2.tiling.prediction import build_test_mapper
from ltm_d2.tiling.reading import DecodedImages, ImageTooLargeError

from support import tiny_cfg
from support.user_data import make_images, write_csv

HEIGHT, WIDTH = 256, 320  # 81,920 pixels
# PIL's limit (MAX_IMAGE_PIXELS) at which it warns at every read of the image, or refuses it.
LIMITS = {"warned": HEIGHT * WIDTH - 1, "refused": 1000}
NUM_CLASSES_FROM_DATA = ("MODEL.RETINANET.NUM_CLASSES", 0)


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


def test_without_tiling_an_image_over_pils_limit_stops_training_naming_it(image_file, monkeypatch):
    path, _ = image_file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMITS["warned"])
    with pytest.raises(ImageTooLargeError) as error:
        training_mapper(path)(record_of(path))
    message = str(error.value)
    assert f"image {path} is 320 x 256 pixels (0.1 megapixels)" in message
    assert "set INPUT.TILING.SIZE" in message


def test_without_tiling_every_training_image_over_pils_limit_is_named_before_training(
    tmp_path, monkeypatch
):
    path = write_csv(str(tmp_path), make_images(3, seed=0))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 96 * 128 - 1)  # each image is 96 x 128
    datasets = ("DATASETS.TRAIN", (f"csv:{path}",), "DATASETS.TEST", (), *NUM_CLASSES_FROM_DATA)
    with pytest.raises(DatasetError) as error:
        check_training_datasets(tiny_cfg(*datasets))
    message = str(error.value)
    assert "3 problem(s)" in message and message.count("set INPUT.TILING.SIZE") == 3
    check_training_datasets(tiny_cfg(*datasets, "INPUT.TILING.SIZE", 64))


def test_without_tiling_an_image_over_pils_limit_is_marked_at_test_naming_why(
    image_file, monkeypatch
):
    path, _ = image_file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMITS["warned"])
    marked = build_test_mapper(tiny_cfg())(record_of(path))
    assert "image" not in marked
    assert marked[UNREADABLE].startswith("ImageTooLargeError: ")
    assert "set INPUT.TILING.SIZE" in marked[UNREADABLE]


def test_pils_limit_is_lifted_inside_large_images_allowed_only(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with large_images_allowed():
        with large_images_allowed():
            assert Image.MAX_IMAGE_PIXELS is None
        assert Image.MAX_IMAGE_PIXELS is None  # the outer reader still reads
    assert Image.MAX_IMAGE_PIXELS == 1000
    with large_images_allowed(False):
        assert Image.MAX_IMAGE_PIXELS == 1000


def test_consecutive_tiles_of_an_image_are_cut_from_one_decoding(image_file, monkeypatch):
    path, pixels = image_file
    read_image = detection_utils.read_image
    reads = []

    def counted_read(file_name, format=None):
        reads.append(file_name)
        return read_image(file_name, format=format)

    monkeypatch.setattr(detection_utils, "read_image", counted_read)
    mapper = training_mapper(path, "INPUT.TILING.SIZE", "128")
    tiles = tiles_of(path)
    mapped = [mapper(tile) for tile in tiles]
    assert reads == [path]
    for tile, out in zip(tiles, mapped):
        x1, y1, x2, y2 = tile["tile"]
        assert torch.equal(out["image"], torch.from_numpy(pixels[y1:y2, x1:x2]).permute(2, 0, 1))


def test_augmentations_never_change_the_kept_image(image_file):
    path, pixels = image_file

    def invert_in_place(image):
        np.subtract(255, image, out=image)
        return image

    mapper = training_mapper(path, "INPUT.TILING.SIZE", "128")
    mapper.augmentations = T.AugmentationList(
        [T.HFlipTransform(width=128), T.ColorTransform(invert_in_place)]
    )
    tile = tiles_of(path)[4]  # [102, 102, 230, 230]
    first, again = mapper(tile)["image"], mapper(tile)["image"]
    expected = 255 - pixels[102:230, 102:230][:, ::-1]  # (128, 128, 3)
    assert torch.equal(first, torch.from_numpy(expected.copy()).permute(2, 0, 1))
    assert torch.equal(again, first)


def test_the_kept_images_are_bounded_by_bytes_the_least_recently_used_out():
    reads = []

    def read(name):
        reads.append(name)
        return np.zeros(400 if name == "huge" else 100, dtype=np.uint8)

    kept = DecodedImages(max_bytes=200)
    for name in ["a", "b", "a", "c", "a", "b"]:
        kept.get(name, read)
    assert reads == ["a", "b", "c", "b"]  # c pushed b out, a was used more recently
    kept.get("huge", read)
    kept.get("huge", read)
    assert reads[-1:] == ["huge"]  # the last image is kept, even over the bound
    assert not kept.get("huge", read).flags.writeable


def test_a_dataset_of_images_over_pils_limit_is_read_by_their_headers(
    image_file, monkeypatch, tmp_path
):
    from ltm_d2.data.user_datasets import load_dataset

    path, _ = image_file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMITS["refused"])
    csv_file = tmp_path / "big.csv"
    csv_file.write_text(f"{path},10,10,50,50,tree\n")
    (record,) = load_dataset(f"csv:{csv_file}").records
    assert (record["height"], record["width"]) == (HEIGHT, WIDTH)
