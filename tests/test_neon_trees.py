"""dev/neon_trees.py: the tree-crown example's train, tune and val folders, made here from a small
stand-in of deepforest's data (an 80 x 64 training image, a 40 x 32 val image) as a wheel and as
an installed package."""

import os
import xml.etree.ElementTree as ET
import zipfile

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog

from dev.neon_trees import PIP_COMMAND, TRAIN_IMAGE, VAL_IMAGE, data_reader, main
from ltm_d2.data.user_datasets import ensure_registered
from ltm_d2.errors import UserError

from support.user_data import voc_xml

# Boxes of the training image (x1, y1, x2, y2, pixels from 0): its bottom quarter, rows 48 to 64,
# is tune. One box on each side of the cut, two across it with their centre on either side, one
# with its centre on the cut (tune's).
TRAIN_BOXES = [
    (2, 5, 20, 20, "Tree"),
    (22, 50, 34, 60, "Tree"),
    (36, 40, 48, 52, "Tree"),
    (50, 44, 62, 60, "Tree"),
    (64, 42, 76, 54, "Tree"),
]
CUT = 48
VAL_BOXES = [(3, 4, 15, 18, "Tree"), (20, 10, 36, 30, "Tree")]


def _write_data(folder):
    """deepforest/data/'s two images and XMLs, in `folder`; returns its files' names."""
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for stem, (h, w), boxes in (
        (TRAIN_IMAGE, (64, 80), TRAIN_BOXES),
        (VAL_IMAGE, (32, 40), VAL_BOXES),
    ):
        cv2.imwrite(os.path.join(folder, f"{stem}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
        xml = voc_xml(f"{stem}.png", (h, w), boxes)
        ET.ElementTree(xml).write(os.path.join(folder, f"{stem}.xml"))
    return sorted(os.listdir(folder))


@pytest.fixture
def wheel(tmp_path):
    """A wheel holding the stand-in as deepforest/data/."""
    data = tmp_path / "package" / "deepforest" / "data"
    path = tmp_path / "deepforest-2.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name in _write_data(data):
            archive.write(data / name, f"deepforest/data/{name}")
    return str(path)


@pytest.fixture
def out(tmp_path, wheel):
    folder = str(tmp_path / "trees")
    assert main(["--wheel", wheel, "--out", folder]) == 0
    return folder


def _boxes(xml_file):
    """(x1, y1, x2, y2) of each object, pixels from 0 as the project reads VOC, and <size>."""
    root = ET.parse(xml_file).getroot()
    boxes = [
        tuple(float(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        for o in root.findall("object")
    ]
    size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    return [(x1 - 1, y1 - 1, x2, y2) for x1, y1, x2, y2 in boxes], size


def _split_file(out, split):
    stem = VAL_IMAGE if split == "val" else f"{TRAIN_IMAGE}_{split}"
    return os.path.join(out, split, f"{stem}.xml"), os.path.join(out, split, f"{stem}.png")


def test_every_split_has_its_boxes_within_its_image_and_its_size_in_its_xml(out):
    for split in ("train", "tune", "val"):
        xml_file, png = _split_file(out, split)
        boxes, size = _boxes(xml_file)
        height, width = cv2.imread(png).shape[:2]
        assert size == (width, height)
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def test_each_training_object_goes_to_the_part_holding_its_centre_clipped_to_it(out):
    expected = {"train": [], "tune": []}
    for x1, y1, x2, y2, _ in TRAIN_BOXES:
        if (y1 + y2) / 2 >= CUT:
            expected["tune"].append((x1, max(y1, CUT) - CUT, x2, y2 - CUT))
        else:
            expected["train"].append((x1, y1, x2, min(y2, CUT)))
    for split in ("train", "tune"):
        assert sorted(_boxes(_split_file(out, split)[0])[0]) == sorted(expected[split])


def test_the_training_image_is_cut_into_its_two_parts_pixel_for_pixel(out, tmp_path):
    original = cv2.imread(str(tmp_path / "package" / "deepforest" / "data" / f"{TRAIN_IMAGE}.png"))
    parts = [cv2.imread(_split_file(out, split)[1]) for split in ("train", "tune")]
    np.testing.assert_array_equal(np.concatenate(parts), original)


def test_val_is_deepforests_second_image_and_xml_unchanged(out, tmp_path):
    data = tmp_path / "package" / "deepforest" / "data"
    for written, name in zip(_split_file(out, "val"), (f"{VAL_IMAGE}.xml", f"{VAL_IMAGE}.png")):
        assert open(written, "rb").read() == (data / name).read_bytes()


def test_the_projects_voc_reader_loads_the_three_folders(out):
    sizes = {}
    for split in ("train", "tune", "val"):
        records = DatasetCatalog.get(ensure_registered(f"voc:{os.path.join(out, split)}"))
        sizes[split] = [(r["width"], r["height"], len(r["annotations"])) for r in records]
    assert sizes == {"train": [(80, 48, 2)], "tune": [(80, 16, 3)], "val": [(40, 32, 2)]}


def test_the_summary_gives_each_splits_image_size_and_trees(out, wheel, capsys):
    main(["--wheel", wheel, "--out", out])
    printed = capsys.readouterr().out
    assert f"| tune | {TRAIN_IMAGE}_tune.png | 80 x 16 | 3 | 2 |" in printed
    assert f"| val | {VAL_IMAGE}.png | 40 x 32 | 2 | 0 |" in printed


def test_an_installed_package_gives_the_splits_its_wheel_gives(out, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path / "package"))
    (tmp_path / "package" / "deepforest" / "__init__.py").write_text("raise ImportError\n")
    installed = str(tmp_path / "from_package")
    assert main(["--out", installed]) == 0  # found without importing the package
    for split in ("train", "tune", "val"):
        for ours, theirs in zip(_split_file(out, split), _split_file(installed, split)):
            assert open(ours, "rb").read() == open(theirs, "rb").read()


def test_without_a_wheel_or_an_installed_package_the_error_gives_the_pip_command(
    tmp_path, monkeypatch
):
    monkeypatch.setattr("sys.path", [str(tmp_path)])
    with pytest.raises(UserError, match="deepforest is not installed") as error:
        data_reader(None)
    assert PIP_COMMAND in str(error.value)


def test_a_wheel_without_the_images_is_refused_naming_the_missing_file(tmp_path):
    path = tmp_path / "other.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other/__init__.py", "")
    with pytest.raises(UserError, match=f"no deepforest/data/{TRAIN_IMAGE}.png"):
        main(["--wheel", str(path), "--out", str(tmp_path / "trees")])
