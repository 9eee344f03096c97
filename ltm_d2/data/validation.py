"""
Checks of a COCO-format detection dataset before training.

Detectron2 trusts its annotation file: a NaN coordinate, a box of negative size or one entirely
outside its image is dropped silently or trained on, an unknown category id or an annotation of
no image fails with a bare KeyError or is dropped with a warning, a missing image file crashes the
run when the data loader first reaches it, maybe days in. :func:`validate_coco_json` finds all of
these at once, before training, and names the file, the image id, the annotation id, what is
wrong and what was expected. Boxes that are only partly outside their image are accepted: the
training mapper of Detectron2 clips them to the image (`transform_instance_annotations`). Boxes of
zero width or height (COCO's own files hold a few) are counted and logged, and Detectron2's mapper
leaves them out of training (`filter_empty_instances`).
"""

import contextlib
import functools
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import ExifTags, Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.utils.file_io import PathManager

from ..errors import UserError

logger = logging.getLogger(__name__)

# At most this many problems are spelled out in one error; the rest are counted.
MAX_LISTED_PROBLEMS = 20


class DatasetError(UserError, ValueError):
    """A dataset that must not be trained on; the message lists what is wrong with it."""


def check_image_mode(mode: str, path: str, where: str) -> None:
    """
    Raise a DatasetError for an image whose PIL `mode` is not of 8 bits per channel: 16-bit or
    32-bit integer ("I;16", "I;16B", "I", ...) or floating-point ("F") pixels. Detectron2's
    `read_image` converts such an image to 8-bit RGB by clipping each value to 0..255, which
    makes a 16-bit image nearly all white and a float image in 0..1 all black, silently.
    """
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        kind = "floating-point" if mode.startswith("F") else "16- or 32-bit integer"
        raise DatasetError(
            f"{where}: image {path} has {kind} pixels (PIL mode {mode}), which Detectron2 reads "
            "clipped to 0..255 (a 16-bit image mostly white, a float image in 0..1 black)"
            "; expected 8 bits per channel: convert the image to 8 bits, scaling its "
            "values to 0..255 by the range that matters to you"
        )


# Readers inside large_images_allowed() (nested or in other threads), and PIL's limit before the
# first of them entered: the limit is one global of the PIL module.
_lift_lock = threading.Lock()
_lift_count = 0
_saved_limit = None


@contextlib.contextmanager
def large_images_allowed(allowed: bool = True) -> Iterator[None]:
    """
    Inside, PIL reads images of any size: its decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`,
    89.5 megapixels by default), which warns (DecompressionBombWarning) at every read of an
    image above it and refuses one above twice it (DecompressionBombError, at `Image.open`), is
    lifted; it is restored on leaving. A guard against hostile files from the web, it would
    otherwise stop the orthomosaics that tiling is for, which are the user's own data. Nothing
    happens when `allowed` is False.

    Wrap the reads themselves (`Image.open`, Detectron2's `read_image`), in the process that
    reads: a data-loader worker, forked or spawned, runs its mapper's reads inside it.
    """
    global _lift_count, _saved_limit
    if not allowed:
        yield
        return
    with _lift_lock:
        if _lift_count == 0:
            _saved_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _lift_count += 1
    try:
        yield
    finally:
        with _lift_lock:
            _lift_count -= 1
            if _lift_count == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


# EXIF orientations that turn the image by a quarter: Detectron2's `read_image` applies them,
# so the pixels it reads have the stored image's width and height swapped.
_QUARTER_TURNS = (5, 6, 7, 8)


class ImageHeader(NamedTuple):
    """What an image file's header says, as Detectron2's `read_image` gives its pixels."""

    height: int  # after the EXIF orientation
    width: int  # after the EXIF orientation
    mode: str  # PIL's mode of the stored pixels
    orientation: int  # the EXIF orientation, 1 when the file has none


def read_image_header(path: str) -> ImageHeader:
    """
    The size and mode of the image file at `path` from its header, without decoding its pixels;
    the size is the one `read_image` gives, which turns the image by its EXIF orientation (a phone
    photo taken upright is often stored sideways with orientation 6). The EXIF block is read from
    where the header holds it (a PNG's eXIf chunk after the pixels is not looked for). OSError (or
    PIL's SyntaxError) where the file cannot be opened as an image.
    """
    with large_images_allowed(), PathManager.open(path, "rb") as f, Image.open(f) as image:
        width, height = image.size
        try:
            # Image.getexif itself, which a PNG overrides to decode the whole image first.
            orientation = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
        except Exception:  # a malformed EXIF block, which read_image ignores too
            orientation = 1
        mode = image.mode
    if orientation in _QUARTER_TURNS:
        width, height = height, width
    return ImageHeader(height, width, mode, orientation)


def check_image_file_mode(path: str, where: str) -> None:
    """:func:`check_image_mode` of the image file at `path`, from its header; OSError (or PIL's
    SyntaxError) where the file cannot be opened as an image."""
    check_image_mode(read_image_header(path).mode, path, where)


def checked_image_header(path: str, where: str) -> ImageHeader:
    """:func:`read_image_header`, with a DatasetError naming the image (and `where` it is named)
    when it cannot be read or is not of 8 bits per channel (:func:`check_image_mode`)."""
    try:
        header = read_image_header(path)
    except (OSError, SyntaxError) as e:
        raise DatasetError(f"{where}: cannot read image {path}: {e}") from e
    check_image_mode(header.mode, path, where)
    return header


def warn_of_names_differing_in_case(classes: Sequence[str], source: str) -> None:
    """Log a warning for class names of `source` that differ only in case or surrounding spaces
    ("Tree" and "tree"): they are different classes to the model, which is rarely what was meant."""
    groups: Dict[str, List[str]] = {}
    for name in classes:
        groups.setdefault(name.strip().casefold(), []).append(name)
    for names in groups.values():
        if len(names) > 1:
            logger.warning(
                f"{source}: the class names {names} differ only in case or spaces and are "
                "trained as different classes; write them alike in the annotations if they are one"
            )


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`validate_coco_json` found in a valid annotation file."""

    num_images: int
    num_annotations: int
    num_categories: int
    # Images without any annotation: Detectron2 leaves them out of training when
    # DATALOADER.FILTER_EMPTY_ANNOTATIONS is True (the default), else they are pure background.
    num_images_without_annotations: int
    # Boxes partly outside their image, which Detectron2's mapper clips to it.
    num_boxes_clipped: int
    # Boxes of zero width or height, which Detectron2's mapper leaves out of training.
    num_boxes_empty: int


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def read_coco_json(json_file: str) -> dict:
    """The parsed annotation file, with lists under "images", "annotations" and "categories"."""
    local_file = PathManager.get_local_path(json_file)
    if not os.path.isfile(local_file):
        raise DatasetError(f"{json_file}: the annotation file does not exist")
    try:
        with open(local_file, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{json_file}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{json_file}: not valid JSON: not UTF-8 text ({e.reason})") from e
    if not isinstance(content, dict):
        raise DatasetError(
            f"{json_file}: expected a JSON object with 'images', 'annotations' and 'categories', "
            f"found a {type(content).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(content.get(key), list):
            found = "nothing" if key not in content else f"a {type(content[key]).__name__}"
            raise DatasetError(f"{json_file}: expected a list under '{key}', found {found}")
    return content


def _check_categories(categories: list, problems: List[str]) -> set:
    """Returns the category ids; appends a line to `problems` for each bad category."""
    ids, named = set(), {}
    for position, category in enumerate(categories):
        category_id = category.get("id") if isinstance(category, dict) else None
        if not isinstance(category_id, int) or isinstance(category_id, bool):
            problems.append(f"categories[{position}]: id is {category_id!r}, expected an integer")
        elif category_id in ids:
            problems.append(f"category id {category_id}: appears twice, expected unique ids")
        else:
            ids.add(category_id)
            name = category.get("name")
            if name in named:
                problems.append(
                    f"category ids {named[name]} and {category_id}: both named {name!r}, "
                    "expected one category per name (give their annotations one category id)"
                )
            named.setdefault(name, category_id)
    if not categories:
        problems.append("no categories: expected at least one under 'categories'")
    return ids


def _check_images(
    images: list, image_root: str, problems: List[str]
) -> Dict[object, Tuple[float, float]]:
    """
    Returns {image id: (width, height)} of the images with a valid id and size; appends a line
    to `problems` for each bad image, and for each image file that does not exist.
    """
    sizes, files = {}, {}
    for position, image in enumerate(images):
        image_id = image.get("id") if isinstance(image, dict) else None
        if not _is_id(image_id):
            problems.append(f"images[{position}]: id is {image_id!r}, expected an integer")
            continue
        where = f"image id {image_id}"
        if image_id in sizes:
            problems.append(f"{where}: appears twice in 'images', expected unique ids")
            continue
        width, height = image.get("width"), image.get("height")
        if not (_is_number(width) and _is_number(height) and width > 0 and height > 0):
            problems.append(
                f"{where}: width {width!r} and height {height!r}, expected positive numbers"
            )
            continue
        sizes[image_id] = (float(width), float(height))
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            problems.append(f"{where}: file_name is {file_name!r}, expected a file name")
        elif not PathManager.isfile(os.path.join(image_root, file_name)):
            path = os.path.join(image_root, file_name)
            problems.append(f"{where}: image file {path} does not exist")
        elif os.path.normpath(file_name) in files:
            problems.append(
                f"{where}: file_name {file_name!r} is also image id "
                f"{files[os.path.normpath(file_name)]}'s, expected one image entry per file "
                "(each would be trained on with only its own part of the boxes)"
            )
        else:
            files[os.path.normpath(file_name)] = image_id
    return sizes


def _check_annotation(
    annotation, position: int, sizes: dict, category_ids: set, seen_ids: set
) -> List[str]:
    """The problems of one annotation other than the values of its box (see check_boxes)."""
    if not isinstance(annotation, dict):
        return [f"annotations[{position}]: expected an object, found {annotation!r:.80}"]
    image_id, annotation_id = annotation.get("image_id"), annotation.get("id")
    where = f"image id {image_id}, annotation id {annotation_id}"
    problems = []
    if not _is_id(annotation_id) or annotation_id in seen_ids:
        problems.append(f"{where}: expected a unique integer annotation id")
    else:
        seen_ids.add(annotation_id)
    if not _is_id(image_id) or image_id not in sizes:
        problems.append(f"{where}: refers to no image with a valid id and size in 'images'")
    category_id = annotation.get("category_id")
    if not _is_id(category_id) or category_id not in category_ids:
        problems.append(
            f"{where}: category id {category_id!r} is unknown, "
            f"expected one of the ids under 'categories' {sorted(category_ids)}"
        )
    bbox = annotation.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
        problems.append(f"{where}: bbox is {bbox!r:.80}, expected [x, y, width, height]")
    return problems


def check_boxes(
    boxes: Sequence,
    image_sizes: Sequence,
    places: Sequence[str],
    problems: List[str],
    written: Optional[Sequence[str]] = None,
) -> Tuple[int, List[str]]:
    """
    Check the values of (A, 4) XYWH `boxes` against the (A, 2) width and height of their images;
    `places` names each annotation. Appends a line to `problems` for each bad box; returns the
    number of boxes partly outside their image and the places of the boxes of zero width or height.
    A box is shown in `problems` as `written[i]` (its corners as the annotation file has them,
    e.g. "box x1,y1,x2,y2 70,20,20,60") when given, else as its COCO "bbox [x, y, w, h]".
    """
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    image_sizes = np.array(image_sizes, dtype=np.float64).reshape(-1, 2)
    x, y, w, h = boxes.T
    image_w, image_h = image_sizes.T
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        non_negative = finite & (w >= 0) & (h >= 0)
        positive = non_negative & (w > 0) & (h > 0)
        overlaps = positive & (x < image_w) & (y < image_h) & (x + w > 0) & (y + h > 0)
        clipped = overlaps & ((x < 0) | (y < 0) | (x + w > image_w) | (y + h > image_h))

    def box(i: int) -> str:
        return written[i] if written is not None else f"bbox {boxes[i].tolist()}"

    for i in np.flatnonzero(~finite):
        problems.append(
            f"{places[i]}: {box(i)} has a NaN or infinite value, expected finite numbers"
        )
    for i in np.flatnonzero(finite & ~non_negative):
        if written is not None:
            reversed_axes = " and ".join(
                ["x2 < x1"] * bool(w[i] < 0) + ["y2 < y1"] * bool(h[i] < 0)
            )
            problems.append(
                f"{places[i]}: {box(i)} has {reversed_axes}, expected x1 <= x2, y1 <= y2"
            )
        else:
            problems.append(
                f"{places[i]}: {box(i)} has width {w[i]:g} and height {h[i]:g}, expected both >= 0"
            )
    for i in np.flatnonzero(positive & ~overlaps):
        problems.append(
            f"{places[i]}: {box(i)} lies entirely outside its "
            f"{image_w[i]:g} x {image_h[i]:g} image, expected it to overlap the image"
        )
    empty = [places[i] for i in np.flatnonzero(non_negative & ~positive)]
    return int(clipped.sum()), empty


def raise_if_any(source: str, problems: List[str]) -> None:
    if not problems:
        return
    listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    raise DatasetError(f"{source}: {len(problems)} problem(s):\n  {listed}{tail}")


def validate_coco_json(json_file: str, image_root: str) -> DatasetSummary:
    """
    Check a COCO instances annotation file and the presence of its image files.

    Raises:
        DatasetError: naming the file and, for each problem, the image id and annotation id, what
            is wrong and what was expected: a missing or malformed file, a missing image file,
            boxes with NaN or infinite values, negative size or entirely outside their
            image, unknown category or image ids, duplicate ids, no annotations at all.
    Returns:
        counts of what the file holds, when it is valid.
    """
    local_file = PathManager.get_local_path(json_file)
    stat = os.stat(local_file) if os.path.isfile(local_file) else None
    version = (stat.st_mtime_ns, stat.st_size) if stat else None
    return _validate_coco_json(json_file, image_root, version)


@functools.lru_cache(maxsize=16)
def _validate_coco_json(json_file: str, image_root: str, file_version) -> DatasetSummary:
    """validate_coco_json, done once per version (modification time, size) of a file."""
    content = read_coco_json(json_file)
    problems: List[str] = []
    category_ids = _check_categories(content["categories"], problems)
    sizes = _check_images(content["images"], image_root, problems)
    annotations = content["annotations"]
    if not annotations:
        problems.append("no annotations: expected at least one under 'annotations' to train on")
    seen_ids: set = set()
    places, boxes, image_sizes, annotated = [], [], [], set()
    for position, annotation in enumerate(annotations):
        found = _check_annotation(annotation, position, sizes, category_ids, seen_ids)
        problems.extend(found)
        if not found:
            places.append(f"image id {annotation['image_id']}, annotation id {annotation['id']}")
            boxes.append(annotation["bbox"])
            image_sizes.append(sizes[annotation["image_id"]])
            annotated.add(annotation["image_id"])
    num_clipped, empty = check_boxes(boxes, image_sizes, places, problems)
    raise_if_any(json_file, problems)
    summary = DatasetSummary(
        num_images=len(sizes),
        num_annotations=len(annotations),
        num_categories=len(category_ids),
        num_images_without_annotations=len(sizes) - len(annotated),
        num_boxes_clipped=num_clipped,
        num_boxes_empty=len(empty),
    )
    logger.info(f"{json_file} checked: {summary}")
    if empty:
        listed = "; ".join(empty[:MAX_LISTED_PROBLEMS])
        logger.warning(
            f"{json_file}: {len(empty)} box(es) of zero width or height, left out of training by "
            f"Detectron2's mapper: {listed}{' ...' if len(empty) > MAX_LISTED_PROBLEMS else ''}"
        )
    return summary


def load_checked_coco_json(json_file: str, image_root: str, dataset_name: str) -> List[dict]:
    """:func:`validate_coco_json`, then Detectron2's `load_coco_json`."""
    validate_coco_json(json_file, image_root)
    return load_coco_json(json_file, image_root, dataset_name)


def register_checked_coco(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """
    Detectron2's `register_coco_instances`, whose loader first checks the annotation file and
    the images with :func:`validate_coco_json`: loading the dataset raises a
    :class:`DatasetError` that lists every problem instead of training on them.
    """
    DatasetCatalog.register(name, lambda: load_checked_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )


def validate_training_datasets(dataset_names: Sequence[str], num_classes: int) -> None:
    """
    Check every COCO-format dataset (one with a `json_file` in its metadata) of `dataset_names`
    with :func:`validate_coco_json`, and that the model has a class for each of its categories.
    Datasets registered another way are logged as not checked.
    """
    for name in dataset_names:
        metadata = MetadataCatalog.get(name)
        json_file = metadata.get("json_file")
        if metadata.get("user_dataset") in ("voc", "csv"):
            continue  # checked as they are read (data/user_datasets.py)
        if json_file is None:
            logger.warning(f"Dataset {name} has no COCO json_file: not checked before training")
            continue
        summary = validate_coco_json(json_file, metadata.image_root)
        if summary.num_categories > num_classes:
            raise DatasetError(
                f"{json_file}: {summary.num_categories} categories, but the model has "
                f"MODEL.RETINANET.NUM_CLASSES = {num_classes}; expected at most that many"
            )
