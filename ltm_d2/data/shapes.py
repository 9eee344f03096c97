"""
The bundled dataset: synthetic shapes in COCO format, generated on first use.

It exercises what the paper is about: categories of very different aspect ratios (discs, squares,
slender bars of 1:4 to 1:10 in both orientations), objects whose distinctive part is off their
box centre (L-shapes, hooks, arrows), crowded clusters of heavily overlapping objects (box IoU up
to 0.7) beside sparse images, sizes from 12 px to half the image, on textured, noisy backgrounds.
A split is deterministic for its seed, written once under $DETECTRON2_DATASETS (default
./datasets) and reused.
"""

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

logger = logging.getLogger(__name__)

CLASSES = ["disc", "square", "bar", "L-shape", "hook", "arrow"]
DATASET_DIR = "ltm_shapes"
MAX_PAIR_IOU = 0.7


@dataclass(frozen=True)
class ShapesSplit:
    num_images: int
    image_size: int
    seed: int
    min_object_size: int = 12


SPLITS: Dict[str, ShapesSplit] = {
    "ltm_shapes_train": ShapesSplit(num_images=2000, image_size=256, seed=0),
    "ltm_shapes_val": ShapesSplit(num_images=200, image_size=256, seed=1),
    "ltm_shapes_tune": ShapesSplit(num_images=200, image_size=256, seed=7),
    # The same task at 128 px, four times cheaper per image: what `make demo` trains on.
    "ltm_shapes_small_train": ShapesSplit(num_images=4000, image_size=128, seed=4),
    "ltm_shapes_small_val": ShapesSplit(num_images=500, image_size=128, seed=5),
    # Held out from both: settings are tuned on it (tools/study.py), never on the val split.
    "ltm_shapes_small_tune": ShapesSplit(num_images=500, image_size=128, seed=6),
    # Small splits for tests and smoke runs.
    "ltm_shapes_mini_train": ShapesSplit(num_images=24, image_size=128, seed=2),
    "ltm_shapes_mini_val": ShapesSplit(num_images=8, image_size=128, seed=3),
}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, noisy background: low-frequency colour blobs, stripes, clutter and noise."""
    coarse = rng.uniform(40, 215, size=(rng.integers(3, 7), rng.integers(3, 7), 3))
    image = cv2.resize(coarse.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        period = rng.uniform(6, 24)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size]
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        image += (rng.uniform(8, 25) * stripes)[..., None]
    for _ in range(rng.integers(0, 12)):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(float(v) for v in rng.uniform(30, 225, 3))
        cv2.line(image, p1, p2, colour, 1, cv2.LINE_AA)
    image += rng.normal(0, rng.uniform(4, 14), image.shape)
    return image


def _shape_size(rng: np.random.Generator, name: str, scale: float) -> Tuple[float, float]:
    """Box width and height of a shape whose longer side is `scale`."""
    if name in ("disc", "square"):
        aspect = rng.uniform(0.9, 1.1)
    elif name == "bar":
        aspect = rng.uniform(4, 10)
    elif name == "arrow":
        aspect = rng.uniform(2, 3.5)
    else:  # L-shape, hook
        aspect = rng.uniform(1.0, 1.8)
    long_side, short_side = scale, max(scale / aspect, 4.0)
    if name != "disc" and name != "square" and rng.random() < 0.5:
        return short_side, long_side
    return long_side, short_side


_SHIFT = 4  # sub-pixel precision of cv2 drawing


def _fill(image: np.ndarray, polygon, colour) -> None:
    points = np.round(np.asarray(polygon, dtype=np.float64) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(image, [points], colour, cv2.LINE_AA, _SHIFT)


def _rect(x0: float, y0: float, x1: float, y1: float):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _draw_shape(image, rng, name: str, box, colour) -> None:
    """Draw shape `name` so that it fills the box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if name == "disc":
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        _fill(
            image,
            np.stack(
                [(x0 + x1) / 2 + w / 2 * np.cos(angles), (y0 + y1) / 2 + h / 2 * np.sin(angles)],
                axis=1,
            ),
            colour,
        )
    elif name in ("square", "bar"):
        _fill(image, _rect(x0, y0, x1, y1), colour)
    elif name == "L-shape":
        # Two arms meeting at a random corner of the box.
        t = max(min(w, h) * rng.uniform(0.25, 0.4), 2.0)
        vx = x0 if rng.random() < 0.5 else x1 - t
        hy = y0 if rng.random() < 0.5 else y1 - t
        _fill(image, _rect(vx, y0, vx + t, y1), colour)
        _fill(image, _rect(x0, hy, x1, hy + t), colour)
    elif name == "hook":
        # A stem along one long side, ending in a half ring at one end of the box.
        transpose = w > h
        if transpose:
            w, h = h, w
        t = max(w * 0.25, 2.0)
        r = w / 2
        ring = np.linspace(0, np.pi, 16)
        outer = np.stack([w / 2 + r * np.cos(ring), h - r + r * np.sin(ring)], axis=1)
        inner = np.stack([w / 2 + (r - t) * np.cos(ring), h - r + (r - t) * np.sin(ring)], axis=1)
        outline = np.concatenate(
            [[[w, 0.0], [w, h - r]], outer, inner[::-1], [[w - t, h - r], [w - t, 0.0]]]
        )
        if rng.random() < 0.5:
            outline[:, 1] = h - outline[:, 1]
        if transpose:
            outline = outline[:, ::-1]
        _fill(image, outline + [x0, y0], colour)
    elif name == "arrow":
        # A shaft with a triangular head at one end, drawn pointing right then turned.
        transpose = h > w
        if transpose:
            w, h = h, w
        head = min(h, w * 0.45)
        t = max(h * 0.3, 2.0)
        shaft = np.array(_rect(0, (h - t) / 2, w - head, (h + t) / 2))
        tip = np.array([[w - head, 0], [w, h / 2], [w - head, h]])
        flip = rng.random() < 0.5
        for part in (shaft, tip):
            part = part.astype(np.float64)
            if flip:
                part[:, 0] = w - part[:, 0]
            if transpose:
                part = part[:, ::-1]
            _fill(image, part + [x0, y0], colour)


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) XYXY box with (n, 4) boxes."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def _layout(rng: np.random.Generator, split: ShapesSplit) -> List[Tuple[str, np.ndarray]]:
    """
    Objects of one image as (class name, XYXY box): a sparse scatter or a crowded cluster of
    similar-sized objects, no two with a box IoU above MAX_PAIR_IOU.
    """
    size = split.image_size
    crowded = rng.random() < 0.4
    count = rng.integers(5, 13) if crowded else rng.integers(1, 6)
    log_lo, log_hi = np.log(split.min_object_size), np.log(size / 2)
    if crowded:
        cluster_scale = np.exp(rng.uniform(log_lo, np.log(size / 4)))
        centre = rng.uniform(0.3 * size, 0.7 * size, 2)
    objects, boxes = [], np.zeros((0, 4))
    for _ in range(count * 6):
        if len(objects) == count:
            break
        name = CLASSES[rng.integers(len(CLASSES))]
        if crowded:
            scale = cluster_scale * rng.uniform(0.8, 1.6)
            w, h = _shape_size(rng, name, scale)
            spread = max(cluster_scale, 16.0) * 1.2
            cx, cy = centre + rng.normal(0, spread, 2)
        else:
            w, h = _shape_size(rng, name, np.exp(rng.uniform(log_lo, log_hi)))
            cx, cy = rng.uniform(w / 2, size - w / 2), rng.uniform(h / 2, size - h / 2)
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]).clip(0, size)
        if min(box[2] - box[0], box[3] - box[1]) < 3:
            continue
        if len(boxes) and _box_iou(box, boxes).max() > MAX_PAIR_IOU:
            continue
        if not crowded and len(boxes) and _box_iou(box, boxes).max() > 0.1:
            continue
        objects.append((name, box))
        boxes = np.vstack([boxes, box])
    return objects


def _colour(rng: np.random.Generator, background: np.ndarray, box: np.ndarray):
    """A colour that stands out from the background under the box."""
    x0, y0, x1, y1 = box.astype(int)
    under = background[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].reshape(-1, 3).mean(0)
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - under).sum() > 150:
            return tuple(float(c) for c in colour)


def render_image(rng: np.random.Generator, split: ShapesSplit):
    """Returns one (H, W, 3) uint8 BGR image and its objects as (class name, XYXY box)."""
    image = _background(rng, split.image_size)
    objects = _layout(rng, split)
    for name, box in objects:
        _draw_shape(image, rng, name, box, _colour(rng, image, box))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def split_paths(name: str) -> Tuple[str, str]:
    """(annotation json, image folder) of split `name` under $DETECTRON2_DATASETS/ltm_shapes."""
    folder = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), DATASET_DIR, name)
    return os.path.join(folder, "annotations.json"), os.path.join(folder, "images")


def _write_split(name: str, split: ShapesSplit, folder: str) -> None:
    rng = np.random.default_rng(split.seed)
    os.makedirs(os.path.join(folder, "images"))
    images, annotations = [], []
    for image_id in range(1, split.num_images + 1):
        if image_id % 500 == 0:
            logger.info(f"{name}: {image_id}/{split.num_images} images")
        image, objects = render_image(rng, split)
        file_name = f"{image_id:06d}.jpg"
        cv2.imwrite(
            os.path.join(folder, "images", file_name), image, [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        images.append(
            dict(id=image_id, file_name=file_name, height=split.image_size, width=split.image_size)
        )
        for cls_name, (x0, y0, x1, y1) in objects:
            w, h = float(x1 - x0), float(y1 - y0)
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=CLASSES.index(cls_name) + 1,
                    bbox=[float(x0), float(y0), w, h],
                    area=w * h,
                    iscrowd=0,
                )
            )
    categories = [dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)]
    with open(os.path.join(folder, "annotations.json"), "w") as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def ensure_split(name: str) -> Tuple[str, str]:
    """
    Generate split `name` unless it is already on disk; returns (annotation json, image folder).
    Safe when several processes call it at once: each writes into its own temporary folder, and
    the first to finish renames it into place.
    """
    metadata = MetadataCatalog.get(name)
    json_file, image_root = metadata.json_file, metadata.image_root
    if os.path.exists(json_file):
        return json_file, image_root
    split = SPLITS[name]
    final = os.path.dirname(json_file)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    logger.info(f"Generating {name} ({split.num_images} images) into {final} ...")
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(final))
    try:
        _write_split(name, split, tmp)
        os.rename(tmp, final)
    except OSError:
        if not os.path.exists(json_file):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json_file, image_root


def _load(name: str):
    json_file, image_root = ensure_split(name)
    return load_coco_json(json_file, image_root, name)


def register_shapes() -> None:
    """Register every split of SPLITS in DatasetCatalog and MetadataCatalog (idempotent)."""
    for name in SPLITS:
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(name, lambda name=name: _load(name))
        json_file, image_root = split_paths(name)
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=CLASSES,
        )
