"""A user's small dataset on disk, written as COCO JSON, Pascal VOC XML or CSV, for tests that
train on it with commands only. Objects are filled rectangles and discs of known boxes."""

import csv
import json
import os
import xml.etree.ElementTree as ET
from typing import Dict, List, Tuple

import cv2
import numpy as np

CLASSES = ["rectangle", "disc"]  # as the files name them; the data's class order is alphabetical


def make_images(count: int, size: Tuple[int, int] = (96, 128), seed: int = 0, objects: int = 3):
    """`count` images of (H, W) `size` with `objects` shapes each: [(image, [(x1, y1, x2, y2,
    class name)])], integer corners."""
    rng = np.random.default_rng(seed)
    h, w = size
    images = []
    for _ in range(count):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        boxes = []
        for _ in range(objects):
            bw, bh = (int(v) for v in rng.integers(12, min(h, w) // 2, 2))
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            name = CLASSES[int(rng.integers(0, 2))]
            colour = tuple(int(c) for c in rng.integers(120, 256, 3))
            if name == "rectangle":
                cv2.rectangle(image, (x1, y1), (x1 + bw - 1, y1 + bh - 1), colour, -1)
            else:
                cv2.ellipse(
                    image, (x1 + bw // 2, y1 + bh // 2), (bw // 2, bh // 2), 0, 0, 360, colour, -1
                )
            boxes.append((x1, y1, x1 + bw, y1 + bh, name))
        images.append((image, boxes))
    return images


def write_images(folder: str, images, prefix: str) -> List[str]:
    os.makedirs(folder, exist_ok=True)
    names = []
    for i, (image, _) in enumerate(images):
        names.append(f"{prefix}{i:03d}.png")
        cv2.imwrite(os.path.join(folder, names[-1]), image)
    return names


def write_csv(folder: str, images, name: str = "train") -> str:
    """folder/<name>.csv with images under folder/images/; returns the CSV's path."""
    files = write_images(os.path.join(folder, "images"), images, name)
    path = os.path.join(folder, f"{name}.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        for file_name, (_, boxes) in zip(files, images):
            for box in boxes:
                writer.writerow([f"images/{file_name}", *box])
    return path


def voc_xml(file_name: str, size: Tuple[int, int], boxes) -> ET.Element:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = file_name
    size_element = ET.SubElement(root, "size")
    ET.SubElement(size_element, "width").text = str(size[1])
    ET.SubElement(size_element, "height").text = str(size[0])
    ET.SubElement(size_element, "depth").text = "3"
    for x1, y1, x2, y2, name in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        box = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2, y2)):
            ET.SubElement(box, tag).text = str(value)
    return root


def write_voc(folder: str, images, name: str = "train") -> str:
    """A flat folder of XML files beside their images: folder/<name>/; returns that folder."""
    folder = os.path.join(folder, name)
    files = write_images(folder, images, name)
    for file_name, (image, boxes) in zip(files, images):
        xml = voc_xml(file_name, image.shape[:2], boxes)
        ET.ElementTree(xml).write(os.path.join(folder, os.path.splitext(file_name)[0] + ".xml"))
    return folder


def write_coco(folder: str, images, name: str = "train") -> str:
    """folder/<name>.json with images under folder/images/; returns the JSON's path."""
    files = write_images(os.path.join(folder, "images"), images, name)
    categories: Dict[str, int] = {c: i + 1 for i, c in enumerate(CLASSES)}
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": c} for c, i in categories.items()],
    }
    for image_id, (file_name, (image, boxes)) in enumerate(zip(files, images), start=1):
        coco["images"].append(
            {
                "id": image_id,
                "file_name": f"images/{file_name}",
                "height": image.shape[0],
                "width": image.shape[1],
            }
        )
        for x1, y1, x2, y2, label in boxes:
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": categories[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    path = os.path.join(folder, f"{name}.json")
    with open(path, "w") as f:
        json.dump(coco, f)
    return path
