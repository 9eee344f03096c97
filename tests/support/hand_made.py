"""Hand-made COCO datasets and detection files for the tests of the analysis tools."""

import json

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances


def xywh(box):
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]


def register_coco_dataset(tmp_path, name, images, categories):
    """
    Register `name`, a COCO dataset of 100x100 images without pixels.

    Args:
        images: for each image, a list of (XYXY box, category id) of its objects.
        categories: {category id: name}.
    Returns:
        the annotation json path.
    """
    annotations = [
        {
            "id": len(images) * 100 + k * 100 + j,
            "image_id": k + 1,
            "category_id": c,
            "bbox": xywh(box),
            "area": xywh(box)[2] * xywh(box)[3],
            "iscrowd": 0,
        }
        for k, objects in enumerate(images)
        for j, (box, c) in enumerate(objects)
    ]
    dataset = {
        "images": [
            {"id": k + 1, "file_name": f"{k + 1}.jpg", "height": 100, "width": 100}
            for k in range(len(images))
        ],
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in categories.items()],
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(dataset))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(path), str(tmp_path))
    return path


def write_detections(path, detections):
    """Write [(image id, XYXY box, category id, score)] as a coco_instances_results.json."""
    path.write_text(
        json.dumps(
            [
                {"image_id": i, "bbox": xywh(box), "category_id": c, "score": s}
                for i, box, c, s in detections
            ]
        )
    )
    return str(path)


def perfect_detections(images, keep_image=lambda image_id: True):
    """[(image id, box, category id, 0.9)] for every object of the kept images of `images`."""
    return [
        (k + 1, box, c, 0.9)
        for k, objects in enumerate(images)
        if keep_image(k + 1)
        for box, c in objects
    ]
