"""
A user's own dataset, named in the config by its format and paths instead of a registered name:

    DATASETS.TRAIN ("voc:data/trees/train",)   DATASETS.TEST ("voc:data/trees/val",)

    coco:ANNOTATIONS.json[:IMAGE_DIR]   a COCO instances file; images under IMAGE_DIR (default:
                                        the JSON's folder). Loaded by Detectron2's load_coco_json.
    voc:DIR[:IMAGES_OR_SPLIT]           Pascal VOC XML: DIR is a VOC root (Annotations/,
                                        JPEGImages/; the second part names an ImageSets/Main split)
                                        or a folder of XML files (images beside them, or in the
                                        folder the second part names).
    csv:FILE.csv                        one box per row, image_path,x1,y1,x2,y2,class_name (pixels;
                                        an image without boxes: image_path,,,,,); image paths
                                        relative to the CSV's folder.

Such a name registers itself in Detectron2's DatasetCatalog when a config holding it is loaded
(:func:`register_config_datasets`, called by `load_config`), so every process that reads the
config, spawned workers included, sees the dataset. Class names come from the data; the training
set decides them and the test sets must agree (see :func:`register_config_datasets`).
"""

import csv
import functools
import glob
import io
import logging
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, NamedTuple, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from .validation import (
    DatasetError,
    ImageHeader,
    check_boxes,
    checked_image_header,
    raise_if_any,
    read_coco_json,
    validate_coco_json,
    warn_of_names_differing_in_case,
)

logger = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "csv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


class DatasetSpec(NamedTuple):
    """A dataset named by `format:path[:second]`."""

    format: str
    path: str
    second: Optional[str]


def is_dataset_spec(name: str) -> bool:
    """Whether a dataset name is a `format:path` of a user's dataset, not a registered name."""
    return name.split(":", 1)[0] in FORMATS and ":" in name


def parse_dataset_spec(name: str) -> DatasetSpec:
    fmt, _, rest = name.partition(":")
    if fmt not in FORMATS or not rest:
        raise DatasetError(
            f"dataset {name!r}: expected FORMAT:PATH with FORMAT one of {', '.join(FORMATS)}"
        )
    path, _, second = rest.partition(":")
    return DatasetSpec(fmt, path, second or None)


class Loaded(NamedTuple):
    """A dataset read from its files: Detectron2 records whose category_id indexes `classes`
    (the dataset's own class names, in their order)."""

    records: List[dict]
    classes: List[str]
    # Where each class is first named (file, line or object), for errors.
    first_place: Dict[str, str]


def _check_record_boxes(
    source: str, records: List[dict], places: List[List[str]], written: List[List[str]]
) -> None:
    """The project's box checks (validation.check_boxes) on XYXY records; `places[i][j]` names
    annotation j of record i and `written[i][j]` is its box as the file writes it. Raises a
    DatasetError listing every bad box."""
    boxes, sizes, where, shown = [], [], [], []
    for record, names, texts in zip(records, places, written):
        for annotation, place, text in zip(record["annotations"], names, texts):
            x1, y1, x2, y2 = annotation["bbox"]
            boxes.append([x1, y1, x2 - x1, y2 - y1])
            sizes.append([record["width"], record["height"]])
            where.append(place)
            shown.append(text)
    problems: List[str] = []
    _, empty = check_boxes(boxes, sizes, where, problems, written=shown)
    raise_if_any(source, problems)
    if empty:
        logger.warning(f"{source}: {len(empty)} box(es) of zero width or height, not trained on")


def _with_classes(records: List[dict], names: List[List[str]], places: List[List[str]]) -> Loaded:
    """The dataset whose annotation j of record i is of class `names[i][j]`, named at
    `places[i][j]`: classes in alphabetical order, category ids set."""
    first_place: Dict[str, str] = {}
    for per_image, where in zip(names, places):
        for name, place in zip(per_image, where):
            first_place.setdefault(name, place)
    classes = sorted(first_place)
    index = {name: i for i, name in enumerate(classes)}
    for record, per_image in zip(records, names):
        for annotation, name in zip(record["annotations"], per_image):
            annotation["category_id"] = index[name]
    return Loaded(records, classes, first_place)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_text(csv_file: str) -> str:
    """The CSV file's text, which must be UTF-8 (a byte-order mark is allowed): a DatasetError
    names the file, the line and the encoding expected otherwise."""
    with open(csv_file, "rb") as f:
        data = f.read()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetError(
            f"{csv_file}: UTF-16 text, expected UTF-8: save it as UTF-8 (in Excel: Save As "
            "'CSV UTF-8'; in Python: open(..., 'w', encoding='utf-8'))"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(
            f"{csv_file}, line {line}: byte {data[e.start]:#04x} is not UTF-8 text (a Latin-1 or "
            "Windows-1252 file?), expected UTF-8: save it as UTF-8 (in Excel: Save As 'CSV UTF-8')"
        ) from None


def load_csv(csv_file: str) -> Loaded:
    """Rows `image_path,x1,y1,x2,y2,class_name` (keras-retinanet's format; a first row whose box
    fields are not numbers is a header naming the columns); an image without boxes is a row with
    the five box fields empty. Spellings of one image's path (`a.png`, `./a.png`) are one image."""
    if not os.path.isfile(csv_file):
        raise DatasetError(f"{csv_file}: the CSV file does not exist")
    root = os.path.dirname(csv_file)
    by_image: Dict[str, dict] = {}
    names: Dict[str, List[str]] = {}
    places: Dict[str, List[str]] = {}
    written: Dict[str, List[str]] = {}
    image_problems: List[str] = []
    reader = csv.reader(io.StringIO(_csv_text(csv_file), newline=""))
    for line, row in enumerate(reader, start=1):
        where = f"{csv_file}, line {line}"
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 6:
            raise DatasetError(
                f"{where}: {len(row)} field(s), expected 6: image_path,x1,y1,x2,y2,class_name"
            )
        path, *coordinates, name = (field.strip() for field in row)
        if line == 1 and all(coordinates) and not any(map(_is_number, coordinates)):
            continue  # a header
        key = os.path.normpath(path)
        if key not in by_image:
            file_name = os.path.join(root, key)
            height = width = None
            if not os.path.isfile(file_name):
                image_problems.append(f"{where}: image {file_name} does not exist")
            else:
                try:
                    height, width, *_ = checked_image_header(file_name, where)
                except DatasetError as e:
                    image_problems.append(str(e))
            by_image[key] = {
                "file_name": file_name,
                "image_id": len(by_image),
                "height": height,
                "width": width,
                "annotations": [],
            }
            names[key], places[key], written[key] = [], [], []
        if not any(coordinates) and not name:
            continue
        try:
            box = [float(c) for c in coordinates]
        except ValueError:
            raise DatasetError(
                f"{where}: box {','.join(coordinates)}, expected four numbers x1,y1,x2,y2"
            ) from None
        if not name:
            raise DatasetError(f"{where}: no class name, expected one in the sixth field")
        by_image[key]["annotations"].append({"bbox": box, "bbox_mode": BoxMode.XYXY_ABS})
        names[key].append(name)
        places[key].append(where)
        written[key].append(f"box x1,y1,x2,y2 {','.join(coordinates)}")
    raise_if_any(csv_file, image_problems)  # every image that cannot be used, in one message
    records = list(by_image.values())
    _check_record_boxes(csv_file, records, list(places.values()), list(written.values()))
    return _with_classes(records, list(names.values()), list(places.values()))


class VOCLayout(NamedTuple):
    """Where a VOC dataset's files are."""

    xml_files: List[str]
    xml_root: str  # the folder of the XML files, subfolders included
    image_root: Optional[str]  # the images' folder, with the XMLs' subfolders; None: beside them


def _voc_layout(spec: DatasetSpec) -> VOCLayout:
    """The XML files of a VOC dataset (in subfolders too) and the folder of its images."""
    root = spec.path
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: the Pascal VOC folder does not exist")
    annotations = os.path.join(root, "Annotations")
    if not os.path.isdir(annotations):  # a folder of XML files
        xml_files = glob.glob(os.path.join(root, "**", "*.xml"), recursive=True)
        return VOCLayout(sorted(xml_files), root, spec.second)
    images = os.path.join(root, "JPEGImages")
    if spec.second is None:
        xml_files = glob.glob(os.path.join(annotations, "**", "*.xml"), recursive=True)
        return VOCLayout(sorted(xml_files), annotations, images)
    split_file = os.path.join(root, "ImageSets", "Main", spec.second + ".txt")
    if not os.path.isfile(split_file):
        raise DatasetError(f"{split_file}: the split file of split {spec.second!r} does not exist")
    with open(split_file, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    return VOCLayout([os.path.join(annotations, i + ".xml") for i in ids], annotations, images)


def _xml_number(element, tag: str, where: str) -> float:
    child = element.find(tag)
    try:
        return float(child.text)
    except (AttributeError, TypeError, ValueError):
        found = "nothing" if child is None else repr(child.text)
        raise DatasetError(f"{where}: <{tag}> is {found}, expected a number") from None


def _voc_image(xml_file: str, tree: ET.ElementTree, layout: VOCLayout) -> str:
    """
    The image of an annotation file, in the image folder (default: the XML's folder; with the
    XML's subfolder): the file <filename> names, else one with the XML's name and an image
    extension. Where <filename> names another image than the one of the XML's name beside it,
    which of the two the boxes are of is not known: a DatasetError; where only the named one
    exists, a warning names both.
    """
    subfolder = os.path.relpath(os.path.dirname(xml_file), layout.xml_root)
    folder = os.path.normpath(
        os.path.join(layout.image_root, subfolder)
        if layout.image_root
        else os.path.dirname(xml_file)
    )
    named = (tree.findtext("filename") or "").strip()
    stem = os.path.splitext(os.path.basename(xml_file))[0]
    own = [os.path.join(folder, stem + ext) for ext in IMAGE_EXTENSIONS]
    own += [os.path.join(folder, stem + ext.upper()) for ext in IMAGE_EXTENSIONS]
    own = next((path for path in own if os.path.isfile(path)), None)
    if named and os.path.isfile(os.path.join(folder, named)):
        image = os.path.join(folder, named)
        if os.path.splitext(named)[0] != stem:
            if own is not None:
                raise DatasetError(
                    f"{xml_file}: <filename> names image {image}, but {own} has the XML's own "
                    "name: expected <filename> to name the image the boxes were drawn on"
                )
            logger.warning(f"{xml_file}: its boxes are on {image}, which <filename> names")
        return image
    if own is not None:
        return own
    tried = f"image {os.path.join(folder, named)} does not exist, nor" if named else "no"
    raise DatasetError(f"{xml_file}: {tried} image {stem} with an image extension in {folder}")


def _voc_record(xml_file: str, image_id: int, layout: VOCLayout, problems: List[str]):
    """The record of one VOC annotation file, the class name of each of its objects, where each
    is named and its box as written; an image that cannot be used, or that disagrees with <size>,
    goes to `problems`."""
    if not os.path.isfile(xml_file):
        raise DatasetError(f"{xml_file}: the annotation file does not exist")
    try:
        tree = ET.parse(xml_file)
    except ET.ParseError as e:
        raise DatasetError(f"{xml_file}: not valid XML: {e}") from e
    if tree.getroot().tag != "annotation":
        raise DatasetError(
            f"{xml_file}: root element <{tree.getroot().tag}>, expected Pascal VOC's <annotation>"
        )
    size = tree.find("size")
    if size is None:
        raise DatasetError(f"{xml_file}: no <size>, expected <size><width>..<height>..</size>")
    file_name = _voc_image(xml_file, tree, layout)
    height = int(_xml_number(size, "height", xml_file))
    width = int(_xml_number(size, "width", xml_file))
    try:
        header = checked_image_header(file_name, xml_file)
    except DatasetError as e:  # listed with the dataset's other problems; <size> stands in
        problems.append(str(e))
        header = ImageHeader(height, width, "", 1)
    if height > 0 and width > 0 and (height, width) != (header.height, header.width):
        turned = (height, width) == (header.width, header.height)
        problems.append(
            f"{xml_file}: <size> is {width} x {height} (width x height), but image {file_name} "
            f"is {header.width} x {header.height} as Detectron2 reads it"
            + (
                f", turned by its EXIF orientation {header.orientation}: if the boxes were drawn "
                "on the image as stored, remove its EXIF orientation tag; else correct <size>"
                if turned
                else ": expected the size of the image the boxes were drawn on"
            )
        )
    record = {
        "file_name": file_name,
        "image_id": image_id,
        "height": header.height,
        "width": header.width,
        "annotations": [],
    }
    names, places, written = [], [], []
    for number, obj in enumerate(tree.findall("object"), start=1):
        where = f"{xml_file}, object {number}"
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise DatasetError(f"{where}: expected a <name> and a <bndbox> in each <object>")
        corners = [_xml_number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax")]
        x1, y1, x2, y2 = corners
        difficult = obj.findtext("difficult")
        record["annotations"].append(
            {
                "bbox": [x1 - 1.0, y1 - 1.0, x2, y2],
                "bbox_mode": BoxMode.XYXY_ABS,
                "difficult": int(difficult.strip() == "1") if difficult else 0,
            }
        )
        names.append(name)
        places.append(where)
        written.append(f"<bndbox> xmin,ymin,xmax,ymax {','.join(f'{c:g}' for c in corners)}")
    return record, names, places, written


def load_voc(spec: DatasetSpec) -> Loaded:
    """Pascal VOC XML files (see the module's docstring for the layouts; XML files in subfolders
    are read too). Coordinates are VOC's 1-based pixel indices, as Detectron2's
    `load_voc_instances` reads them; the <difficult> flag is kept for evaluation and the object is
    trained on, as Detectron2 does. Each image must agree with its <size> (as Detectron2 reads it,
    turned by its EXIF orientation) and be annotated by one XML file."""
    layout = _voc_layout(spec)
    if not layout.xml_files:
        raise DatasetError(f"{spec.path}: no .xml annotation files, expected Pascal VOC XML")
    records, names, places, written, problems = [], [], [], [], []
    annotated_by: Dict[str, str] = {}
    for image_id, xml_file in enumerate(layout.xml_files):
        record, *annotations = _voc_record(xml_file, image_id, layout, problems)
        first = annotated_by.setdefault(os.path.normpath(record["file_name"]), xml_file)
        if first != xml_file:
            problems.append(
                f"{xml_file}: annotates image {record['file_name']}, as {first} does; expected one "
                "annotation file per image (each would be trained on with only its own boxes)"
            )
        records.append(record)
        for per_image, value in zip((names, places, written), annotations):
            per_image.append(value)
    raise_if_any(spec.path, problems)
    _check_record_boxes(spec.path, records, places, written)
    return _with_classes(records, names, places)


def load_coco(spec: DatasetSpec, name: str) -> Loaded:
    """A COCO instances file, checked (validate_coco_json), then read by load_coco_json; its
    classes are its categories in the order of their ids."""
    image_root = spec.second or os.path.dirname(spec.path)
    validate_coco_json(spec.path, image_root)
    categories = sorted(read_coco_json(spec.path)["categories"], key=lambda c: c["id"])
    # With the dataset's name, load_coco_json maps category ids to 0..C-1 in the metadata.
    records = load_coco_json(spec.path, image_root, dataset_name=name)
    classes = [c["name"] for c in categories]
    return Loaded(records, classes, {c: f"{spec.path}, categories" for c in classes})


def _file_version(path: str):
    """What changes when a file or folder changes: modification time and size."""
    stat = os.stat(path) if os.path.exists(path) else None
    return (stat.st_mtime_ns, stat.st_size) if stat else None


@functools.lru_cache(maxsize=8)
def _load(name: str, version) -> Loaded:
    spec = parse_dataset_spec(name)
    if spec.format == "coco":
        loaded = load_coco(spec, name)
    else:
        loaded = load_voc(spec) if spec.format == "voc" else load_csv(spec.path)
    if not loaded.records:
        raise DatasetError(f"{spec.path}: no images, expected at least one")
    warn_of_names_differing_in_case(loaded.classes, name)
    return loaded


def load_dataset(name: str) -> Loaded:
    """Read a `format:path` dataset (once per version of its file)."""
    return _load(name, _file_version(parse_dataset_spec(name).path))


def check_classes(name: str, classes: Sequence[str], reference: str) -> None:
    """
    Raise a DatasetError when the classes of the `format:path` dataset `name` disagree with
    `classes` (those of `reference`, which decides them): a COCO file numbers its categories
    itself, so it must have exactly these, in this order of ids; a VOC or CSV dataset must not
    name a class outside them (a test set may lack one).
    """
    loaded = load_dataset(name)
    own = loaded.classes
    if parse_dataset_spec(name).format == "coco":
        if own == list(classes):
            return
        extra = [c for c in own if c not in classes]
        missing = [c for c in classes if c not in own]
        difference = (
            "; ".join(
                [f"categories {extra} are not in {reference}"] * bool(extra)
                + [f"categories {missing} of {reference} are missing"] * bool(missing)
            )
            or "the same names under other category ids"
        )
        raise DatasetError(f"{name}: {difference}; expected the categories {list(classes)}")
    extra = [c for c in own if c not in classes]
    if extra:
        raise DatasetError(
            f"{name}: class {extra[0]!r} ({loaded.first_place[extra[0]]}) is not among the classes "
            f"of {reference}, {list(classes)}"
            + (f"; nor are {extra[1:]}" if len(extra) > 1 else "")
        )


def _records(name: str, classes: List[str], reference: str) -> List[dict]:
    """The records of a `format:path` dataset, category ids into `classes`."""
    check_classes(name, classes, reference)
    loaded = load_dataset(name)
    remap = [classes.index(c) for c in loaded.classes]
    records = []
    for record in loaded.records:
        annotations = [{**a, "category_id": remap[a["category_id"]]} for a in record["annotations"]]
        records.append({**record, "annotations": annotations})
    return records


def register_dataset(name: str, classes: List[str], reference: str) -> None:
    """Register a `format:path` dataset with these class names, those of `reference` (idempotent).
    Loading it fails when its own classes disagree (check_classes)."""
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get("thing_classes") == classes:
            return
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    spec = parse_dataset_spec(name)
    DatasetCatalog.register(name, lambda: _records(name, classes, reference))
    metadata = {"thing_classes": list(classes), "user_dataset": spec.format}
    metadata["evaluator_type"] = "pascal_voc" if spec.format == "voc" else "coco"
    if spec.format == "coco":
        metadata["json_file"] = spec.path
        metadata["image_root"] = spec.second or os.path.dirname(spec.path)
    MetadataCatalog.get(name).set(**metadata)


def register_config_datasets(cfg) -> None:
    """
    Register the `format:path` datasets of cfg.DATASETS.TRAIN and TEST, and set the config's
    class names and count from the data (:func:`register_user_datasets`).
    """
    classes = register_user_datasets(
        (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST),
        cfg.DATASETS.CLASS_NAMES,
        cfg.MODEL.RETINANET.NUM_CLASSES,
    )
    if classes is not None:
        cfg.DATASETS.CLASS_NAMES = tuple(classes)
        cfg.MODEL.RETINANET.NUM_CLASSES = len(classes)


def register_user_datasets(
    dataset_names: Sequence[str],
    class_names: Sequence[str] = (),
    num_classes: int = 0,
    class_names_key: str = "DATASETS.CLASS_NAMES",
    num_classes_key: str = "MODEL.RETINANET.NUM_CLASSES",
) -> Optional[List[str]]:
    """
    Register the `format:path` datasets among `dataset_names` (training ones first) and return
    their class names, None when there is none. `class_names` empty: the first of these datasets
    decides the classes and every other one is checked against it now; otherwise they are the
    config's (a trained model's) and each dataset is checked when it is loaded. `num_classes`
    must be 0 (taken from the data) or their number. The keys name where the config sets the two,
    for the messages.
    """
    names = [n for n in dataset_names if is_dataset_spec(n)]
    for name in dataset_names:
        if ":" in name and name not in names and name not in DatasetCatalog.list():
            parse_dataset_spec(name)  # an unknown format: the error lists the known ones
    if not names:
        return None
    if class_names:
        classes, reference = list(class_names), f"the config's {class_names_key}"
    else:
        classes, reference = load_dataset(names[0]).classes, names[0]
        if not classes:
            raise DatasetError(
                f"{reference}: not one object in its {len(load_dataset(names[0]).records)} "
                "images, so no classes to learn: expected boxes with class names (or give the "
                f"classes in {class_names_key} to evaluate a trained model on it)"
            )
        for name in names[1:]:
            check_classes(name, classes, reference)
    if num_classes not in (0, len(classes)):
        raise DatasetError(
            f"the data has {len(classes)} classes {classes}, but the config sets "
            f"{num_classes_key} {num_classes}: set it to {len(classes)}, or to 0 to take "
            "it from the data"
        )
    for name in names:
        register_dataset(name, classes, reference)
    return classes


def ensure_registered(name: str, class_names: Sequence[str] = ()) -> str:
    """
    For a tool's `--dataset NAME`: a `format:path` dataset not registered by a config is
    registered now, with `class_names` (a trained model's DATASETS.CLASS_NAMES) when given,
    else its own classes. Returns `name`.
    """
    if is_dataset_spec(name) and name not in DatasetCatalog.list():
        if class_names:
            register_dataset(name, list(class_names), "the config's DATASETS.CLASS_NAMES")
        else:
            register_dataset(name, load_dataset(name).classes, name)
    return name
