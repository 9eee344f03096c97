#!/usr/bin/env python
"""
The tree-crown example's splits (docs/own_data.md) from the two NEON images that the DeepForest
package ships (PyPI deepforest 2.1.0, folder deepforest/data/, MIT licence), as folders of Pascal
VOC XML beside PNG images that `voc:OUT/train`, `voc:OUT/tune` and `voc:OUT/val` name:

    pip download --no-deps deepforest==2.1.0 -d /tmp/df
    python dev/neon_trees.py --wheel /tmp/df/deepforest-2.1.0-py3-none-any.whl --out data/trees

Without --wheel the files are read from an installed deepforest package, found without importing
it. Nothing is downloaded here.

- val: the second image and its XML, byte for byte.
- tune: the bottom TUNE_FRACTION of the training image's rows (default 0.25), for choosing the
  schedule and augmentations without looking at val; train: the rows above it.

Each object of the training image goes to the part that holds its box's centre and is clipped to
that part (marked <truncated>): it keeps at least half its height, so none is dropped and none is
in both. Its pixels beyond the cut stay in the other part, unannotated.
"""

import argparse
import copy
import importlib.util
import io
import os
import sys
import xml.etree.ElementTree as ET
import zipfile
from typing import Callable, Dict, List, NamedTuple, Optional

from PIL import Image

# The checkout this script is part of, for ltm_d2 and dev/ when it is run as a script.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from dev.report import markdown_table  # noqa: E402
from ltm_d2.errors import UserError, run_main  # noqa: E402

TRAIN_IMAGE = "2019_YELL_2_528000_4978000_image_crop2"
VAL_IMAGE = "2019_YELL_2_541000_4977000_image_crop"
PACKAGE_DATA = "deepforest/data"
PIP_COMMAND = "pip download --no-deps deepforest==2.1.0 -d /tmp/df"
SPLITS = ("train", "tune", "val")
# The bottom quarter of the training image's 2472 rows: 618 rows, taller than the 400 px tiles
# the example trains on, with 159 of its 574 trees; one cut across the whole width crosses 7
# crowns.
TUNE_FRACTION = 0.25


def data_reader(wheel: Optional[str]) -> Callable[[str], bytes]:
    """The reader of a file of deepforest/data/ by its name: from the wheel, or else from the
    installed deepforest package (found by importlib without importing it)."""
    if wheel is not None:
        try:
            archive = zipfile.ZipFile(wheel)
        except (OSError, zipfile.BadZipFile) as e:
            raise UserError(f"--wheel {wheel}: not a readable wheel ({e}); get it by {PIP_COMMAND}")

        def read_member(name: str) -> bytes:
            try:
                return archive.read(f"{PACKAGE_DATA}/{name}")
            except KeyError:
                raise UserError(
                    f"--wheel {wheel}: no {PACKAGE_DATA}/{name}, expected deepforest 2.1.0's "
                    f"wheel: {PIP_COMMAND}"
                ) from None

        return read_member
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"deepforest is not installed and no --wheel was given: download its wheel by "
            f"{PIP_COMMAND} and give --wheel /tmp/df/deepforest-2.1.0-py3-none-any.whl"
        )
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")

    def read_file(name: str) -> bytes:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UserError(
                f"{path} does not exist: expected deepforest 2.1.0's data; or give its wheel, "
                f"{PIP_COMMAND}, with --wheel"
            )
        with open(path, "rb") as f:
            return f.read()

    return read_file


class Part(NamedTuple):
    """One split's image and its annotation."""

    split: str
    image: Image.Image
    xml: ET.ElementTree
    clipped: int  # its objects clipped at the cut


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _checked_size(image: Image.Image, xml: ET.ElementTree, name: str) -> None:
    size = (int(xml.findtext("size/width")), int(xml.findtext("size/height")))
    if size != image.size:
        raise UserError(
            f"{name}.xml: <size> {size[0]} x {size[1]}, but its image is {image.size[0]} x "
            f"{image.size[1]}: expected deepforest 2.1.0's data ({PIP_COMMAND})"
        )


def split_rows(image: Image.Image, xml: ET.ElementTree, cut: int, stem: str) -> List[Part]:
    """
    The image's rows above `cut` (train) and from it down (tune), each with the objects whose box
    centre it holds (a centre on the cut is tune's), clipped to it and marked <truncated>. Boxes
    are VOC's 1-based pixel indices, read as the project reads them
    (ltm_d2/data/user_datasets.py): rows ymin - 1 to ymax.
    """
    width, height = image.size
    parts = []
    for split, top, bottom in (("train", 0, cut), ("tune", cut, height)):
        part = copy.deepcopy(xml)
        root = part.getroot()
        clipped = 0
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            y1, y2 = float(box.findtext("ymin")) - 1, float(box.findtext("ymax"))
            if ((y1 + y2) / 2 >= cut) != (split == "tune"):
                root.remove(obj)
                continue
            if y1 < top or y2 > bottom:
                y1, y2 = max(y1, top), min(y2, bottom)
                clipped += 1
                truncated = obj.find("truncated")
                if truncated is None:
                    truncated = ET.SubElement(obj, "truncated")
                truncated.text = "1"
            box.find("ymin").text = _number(y1 - top + 1)
            box.find("ymax").text = _number(y2 - top)
        root.find("filename").text = f"{stem}_{split}.png"
        root.find("size/height").text = str(bottom - top)
        parts.append(Part(split, image.crop((0, top, width, bottom)), part, clipped))
    return parts


def _check_folders(out: str, ours: Dict[str, List[str]]) -> None:
    """Refuse folders that hold XML files other than the ones written here: the VOC reader
    would read them as part of the split."""
    for split, names in ours.items():
        folder = os.path.join(out, split)
        for base, _, files in os.walk(folder):
            for name in sorted(files):
                path = os.path.join(base, name)
                if name.endswith(".xml") and os.path.relpath(path, folder) not in names:
                    raise UserError(
                        f"{path}: an annotation file this tool did not write, which would be read "
                        f"as part of {split}: expected --out to name a new folder or this tool's"
                    )


def _tree_count(xml: ET.ElementTree) -> int:
    return len(xml.getroot().findall("object"))


def write_splits(read: Callable[[str], bytes], out: str, tune_fraction: float) -> List[List[str]]:
    """Write OUT/train, OUT/tune and OUT/val; returns the summary's rows: split, image, size,
    trees, trees clipped at the cut."""
    names = {
        "train": [f"{TRAIN_IMAGE}_train.xml"],
        "tune": [f"{TRAIN_IMAGE}_tune.xml"],
        "val": [f"{VAL_IMAGE}.xml"],
    }
    _check_folders(out, names)
    image = Image.open(io.BytesIO(read(f"{TRAIN_IMAGE}.png")))
    xml = ET.ElementTree(ET.fromstring(read(f"{TRAIN_IMAGE}.xml")))
    _checked_size(image, xml, TRAIN_IMAGE)
    cut = round(image.size[1] * (1 - tune_fraction))
    if not 0 < cut < image.size[1]:
        raise UserError(
            f"--tune-fraction {tune_fraction} leaves no rows for train or tune of the "
            f"{image.size[1]} rows: expected a fraction between 0 and 1"
        )
    rows = []
    for part in split_rows(image, xml, cut, TRAIN_IMAGE):
        folder = os.path.join(out, part.split)
        os.makedirs(folder, exist_ok=True)
        stem = f"{TRAIN_IMAGE}_{part.split}"
        part.image.save(os.path.join(folder, f"{stem}.png"))
        part.xml.write(os.path.join(folder, f"{stem}.xml"), encoding="utf-8")
        width, height = part.image.size
        rows.append(
            [part.split, f"{stem}.png", f"{width} x {height}", str(_tree_count(part.xml))]
            + [str(part.clipped)]
        )
    files = {name: read(name) for name in (f"{VAL_IMAGE}.png", f"{VAL_IMAGE}.xml")}
    val_image = Image.open(io.BytesIO(files[f"{VAL_IMAGE}.png"]))
    val_xml = ET.ElementTree(ET.fromstring(files[f"{VAL_IMAGE}.xml"]))
    _checked_size(val_image, val_xml, VAL_IMAGE)
    os.makedirs(os.path.join(out, "val"), exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(out, "val", name), "wb") as f:
            f.write(data)
    width, height = val_image.size
    rows.append(["val", f"{VAL_IMAGE}.png", f"{width} x {height}", str(_tree_count(val_xml)), "0"])
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wheel", help="deepforest's wheel (default: the installed package)")
    parser.add_argument("--out", required=True, help="the folder of train/, tune/ and val/")
    parser.add_argument(
        "--tune-fraction",
        type=float,
        default=TUNE_FRACTION,
        help=f"the share of the training image's rows, at its bottom, held out (default "
        f"{TUNE_FRACTION})",
    )
    args = parser.parse_args(argv)
    rows = write_splits(data_reader(args.wheel), args.out, args.tune_fraction)
    print(markdown_table(["split", "image", "size", "trees", "clipped at the cut"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
