"""
Images stored sideways with an EXIF orientation (phone photos) are read as Detectron2 reads their
pixels, turned upright: their size is the turned one, so boxes drawn on the upright image train
aligned, and a VOC <size> of the stored image is refused saying why.
"""

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from detectron2.data.detection_utils import read_image

from ltm_d2 import load_config
from ltm_d2.data import DatasetError
from ltm_d2.data.mapper import SkippedImages, SkippingDatasetMapper
from ltm_d2.data.user_datasets import load_dataset

from support import TINY_CONFIG
from support.user_data import voc_xml

UPRIGHT = (128, 96)  # (height, width) as displayed
BOX = (20, 30, 60, 90)  # x1, y1, x2, y2 on the upright image


def write_sideways_jpeg(path: str) -> None:
    """An upright 96 x 128 image with a white box at BOX, stored turned a quarter with EXIF
    orientation 6 (as a phone held upright stores it)."""
    upright = np.zeros((*UPRIGHT, 3), dtype=np.uint8)
    x1, y1, x2, y2 = BOX
    upright[y1:y2, x1:x2] = 255
    stored = Image.fromarray(upright).transpose(Image.ROTATE_90)  # orientation 6 undoes it
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, quality=95)


@pytest.fixture
def sideways_csv(tmp_path):
    write_sideways_jpeg(str(tmp_path / "photo.jpg"))
    path = tmp_path / "train.csv"
    path.write_text("photo.jpg,{},{},{},{},box\n".format(*BOX))
    return str(path)


def test_an_exif_turned_image_has_the_size_detectron2_reads(sideways_csv):
    (record,) = load_dataset(f"csv:{sideways_csv}").records
    assert (record["height"], record["width"]) == UPRIGHT
    assert read_image(record["file_name"]).shape[:2] == UPRIGHT


def test_an_exif_turned_image_trains_with_its_box_on_the_object(sideways_csv):
    cfg = load_config(
        TINY_CONFIG,
        ["DATASETS.TRAIN", f"('csv:{sideways_csv}',)", "MODEL.RETINANET.NUM_CLASSES", "0"],
    )
    (record,) = load_dataset(f"csv:{sideways_csv}").records
    skipped = SkippedImages([record["file_name"]])
    mapped = SkippingDatasetMapper(cfg, skipped)(record)
    assert mapped is not None and skipped.count == 0
    x1, y1, x2, y2 = (int(round(v)) for v in mapped["instances"].gt_boxes.tensor[0].tolist())
    image = mapped["image"].numpy()  # (C, H, W), portrait as displayed
    assert image.shape[1] > image.shape[2]
    assert image[:, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].mean() > 200


def test_a_voc_size_of_the_stored_image_is_refused_naming_the_orientation(tmp_path):
    write_sideways_jpeg(str(tmp_path / "photo.jpg"))
    stored_size = UPRIGHT[::-1]
    xml = voc_xml("photo.jpg", stored_size, [(*BOX, "box")])
    ET.ElementTree(xml).write(os.path.join(tmp_path, "photo.xml"))
    with pytest.raises(
        DatasetError, match=r"photo.xml: <size> is 128 x 96 .* turned by its EXIF orientation 6"
    ):
        load_dataset(f"voc:{tmp_path}")
