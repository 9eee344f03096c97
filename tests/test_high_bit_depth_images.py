"""Images of 16-bit or floating-point pixels, which Detectron2 reads clipped to 0..255 (16-bit
ones nearly all white, float ones black), are refused with an error naming the file, never
trained on silently."""

import os

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image

from ltm_d2.data import DatasetError
from ltm_d2.data.mapper import SkippedImages, SkippingDatasetMapper
from ltm_d2.data.user_datasets import load_dataset
from ltm_d2.data.validation import register_checked_coco

from support import tiny_cfg
from support.coco_files import IMAGE_SIZE
from support.coco_files import write_coco as write_small_coco
from support.user_data import make_images, write_csv, write_voc

SIXTEEN_BIT, FLOAT = "16-bit PNG", "float32 TIFF"


def save_deep(path, kind, size=(96, 128)):
    """Overwrite `path` with a grayscale image of 16-bit (values 1000 to 4000, as a 12-bit camera
    writes) or float32 (values in 0..1) pixels, keeping its file name."""
    rng = np.random.default_rng(0)
    if kind == SIXTEEN_BIT:
        Image.fromarray(rng.integers(1000, 4000, size, dtype=np.uint16)).save(path, format="PNG")
    else:
        Image.fromarray(rng.random(size, dtype=np.float32)).save(path, format="TIFF")


@pytest.mark.parametrize("kind,mode", [(SIXTEEN_BIT, "I;16"), (FLOAT, "F")])
def test_detectron2_alone_reads_such_an_image_as_one_flat_colour(tmp_path, kind, mode):
    path = str(tmp_path / "deep")
    save_deep(path, kind)
    assert Image.open(path).mode == mode
    pixels = read_image(path, format="BGR")
    assert (pixels == (255 if kind == SIXTEEN_BIT else 0)).all()


@pytest.mark.parametrize("fmt", ["csv", "voc"])
@pytest.mark.parametrize("kind,mode", [(SIXTEEN_BIT, "I;16"), (FLOAT, "F")])
def test_a_csv_or_voc_dataset_with_such_an_image_is_refused_naming_it(tmp_path, fmt, kind, mode):
    writer = write_csv if fmt == "csv" else write_voc
    path = writer(str(tmp_path), make_images(2, seed=0))
    image = os.path.join(tmp_path, "images" if fmt == "csv" else "train", "train001.png")
    save_deep(image, kind)
    with pytest.raises(DatasetError) as error:
        load_dataset(f"{fmt}:{path}")
    message = str(error.value)
    assert image in message and f"PIL mode {mode}" in message
    assert "convert the image to 8 bits" in message


def test_8_bit_grayscale_and_rgb_images_are_accepted(tmp_path):
    path = write_csv(str(tmp_path), make_images(2, seed=0))
    gray = os.path.join(tmp_path, "images", "train001.png")
    Image.open(gray).convert("L").save(gray)
    assert len(load_dataset(f"csv:{path}").records) == 2


@pytest.mark.parametrize("kind,mode", [(SIXTEEN_BIT, "I;16"), (FLOAT, "F")])
def test_the_training_mapper_refuses_such_an_image_of_a_coco_dataset(tmp_path, kind, mode):
    name = f"test_deep_coco_{mode}"
    register_checked_coco(name, {}, *write_small_coco(tmp_path))
    records = DatasetCatalog.get(name)
    mapper = SkippingDatasetMapper(tiny_cfg(), SkippedImages([r["file_name"] for r in records]))
    assert mapper(records[0]) is not None
    save_deep(records[1]["file_name"], kind, size=IMAGE_SIZE)
    with pytest.raises(DatasetError, match=f"image id 2: image .*002.jpg .*PIL mode {mode}"):
        mapper(records[1])
    assert mapper.skipped.count == 0


@pytest.mark.parametrize("fmt", ["csv", "voc"])
def test_every_such_image_of_a_dataset_is_named_in_one_error(tmp_path, fmt):
    writer = write_csv if fmt == "csv" else write_voc
    path = writer(str(tmp_path), make_images(3, seed=0))
    folder = os.path.join(tmp_path, "images" if fmt == "csv" else "train")
    deep = [os.path.join(folder, "train000.png"), os.path.join(folder, "train002.png")]
    save_deep(deep[0], SIXTEEN_BIT)
    save_deep(deep[1], FLOAT)
    with pytest.raises(DatasetError) as error:
        load_dataset(f"{fmt}:{path}")
    message = str(error.value)
    assert "2 problem(s)" in message
    assert f"{deep[0]} has 16- or 32-bit integer pixels" in message
    assert f"{deep[1]} has floating-point pixels" in message
