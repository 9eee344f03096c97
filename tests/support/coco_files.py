"""A small valid COCO-format dataset on disk, for tests that spoil one thing at a time."""

import copy
import json
import os

import cv2
import numpy as np

IMAGE_SIZE = (48, 64)  # H, W


def _annotation(annotation_id, image_id, category_id, bbox):
    return dict(
        id=annotation_id,
        image_id=image_id,
        category_id=category_id,
        bbox=bbox,
        area=bbox[2] * bbox[3],
        iscrowd=0,
    )


GOOD_COCO = {
    "images": [
        {"id": i, "file_name": f"{i:03d}.jpg", "height": IMAGE_SIZE[0], "width": IMAGE_SIZE[1]}
        for i in (1, 2, 3, 4)
    ],
    "annotations": [
        _annotation(11, 1, 1, [4.0, 4.0, 20.0, 10.0]),
        _annotation(12, 1, 2, [30.0, 20.0, 16.0, 16.0]),
        _annotation(21, 2, 2, [10.0, 8.0, 30.0, 30.0]),
        _annotation(31, 3, 1, [0.0, 0.0, 64.0, 48.0]),
        _annotation(41, 4, 1, [40.0, 2.0, 12.0, 30.0]),
    ],
    "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
}


def write_coco(folder, coco=GOOD_COCO, annotation_text=None):
    """
    Write the four images of GOOD_COCO as random JPEGs under folder/images and `coco` as
    folder/annotations.json (or `annotation_text` verbatim). Returns (json file, image root).
    """
    image_root = os.path.join(str(folder), "images")
    os.makedirs(image_root, exist_ok=True)
    rng = np.random.default_rng(0)
    for image in GOOD_COCO["images"]:
        pixels = rng.integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(image_root, image["file_name"]), pixels)
    json_file = os.path.join(str(folder), "annotations.json")
    with open(json_file, "w") as f:
        f.write(json.dumps(coco) if annotation_text is None else annotation_text)
    return json_file, image_root


def with_changes(kind, entry_id, **fields):
    """A copy of GOOD_COCO whose entry `entry_id` of `kind` ("images" or "annotations") has
    `fields`."""
    coco = copy.deepcopy(GOOD_COCO)
    next(e for e in coco[kind] if e["id"] == entry_id).update(fields)
    return coco


def spoil_image_file(path, how):
    """Make the image file at `path` unusable: "truncated", "empty", "not_an_image", "deleted"
    or "wrong_size" (a readable image of another size than the annotation file says)."""
    if how == "deleted":
        os.remove(path)
        return
    if how == "wrong_size":
        cv2.imwrite(path, np.zeros((10, 10, 3), dtype=np.uint8))
        return
    content = open(path, "rb").read()
    spoiled = {"truncated": content[: len(content) // 2], "empty": b"", "not_an_image": b"<html>"}
    with open(path, "wb") as f:
        f.write(spoiled[how])
