"""Pascal VOC mAP of any registered detection dataset, with Detectron2's VOC evaluator."""

import logging
import os
import xml.etree.ElementTree as ET
from typing import List

import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from .coco_ap import ground_truth_key, remove_earlier_conversions
from .unreadable_images import skipped_image_ids


def write_voc_annotations(records: List[dict], classes: List[str], folder: str) -> None:
    """
    The ground truth of dataset `records` (category ids into `classes`) as the files Detectron2's
    `voc_eval` reads: folder/<i>.xml for record i (VOC's 1-based integer corners; <difficult>
    from the annotation, default 0) and folder/images.txt listing them.
    """
    os.makedirs(folder, exist_ok=True)
    for i, record in enumerate(records):
        root = ET.Element("annotation")
        for annotation in record.get("annotations", []):
            x1, y1, x2, y2 = BoxMode.convert(
                annotation["bbox"], annotation["bbox_mode"], BoxMode.XYXY_ABS
            )
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = classes[annotation["category_id"]]
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = str(annotation.get("difficult", 0))
            box = ET.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2, y2)):
                ET.SubElement(box, tag).text = str(round(value))
        ET.ElementTree(root).write(os.path.join(folder, f"{i}.xml"))
    with open(os.path.join(folder, "images.txt"), "w") as f:
        f.write("\n".join(str(i) for i in range(len(records))))


class VOCEvaluator(PascalVOCDetectionEvaluator):
    """
    Detectron2's PascalVOCDetectionEvaluator (mAP at IoU 0.5 to 0.95, "bbox/AP50" the VOC
    figure; VOC 2012's area under the curve, or VOC 2007's 11 points with `use_07_metric`) for
    any layout of the ground truth: it is written out as VOC files (write_voc_annotations) into
    `output_dir`, which Detectron2's evaluator otherwise expects in a VOC root. Classes are named
    by their index in these files, as Detectron2's evaluator names a file by each class ("car/truck"
    would be a folder); images given no output (skipped as unreadable) are left out of the mAP.
    """

    def __init__(self, dataset_name: str, output_dir: str, use_07_metric: bool = False):
        self._dataset_name = dataset_name
        num_classes = len(MetadataCatalog.get(dataset_name).thing_classes)
        self._class_names = [f"class_{i}" for i in range(num_classes)]
        self._is_2007 = use_07_metric
        self._cpu_device = torch.device("cpu")
        # Detectron2 caches the files it parsed by path (voc_eval's parse_rec): one folder per
        # dataset and version of its records, so that edited data is never read from that cache.
        records = DatasetCatalog.get(dataset_name)
        key = ground_truth_key(dataset_name, records)
        self._folder = os.path.join(output_dir, f"voc_ground_truth_{key}")
        if comm.is_main_process():
            write_voc_annotations(records, self._class_names, self._folder)
            remove_earlier_conversions(self._folder, key)
        comm.synchronize()
        self._anno_file_template = os.path.join(self._folder, "{}.xml")
        self._ids = {record["image_id"]: i for i, record in enumerate(records)}
        self._logger = logging.getLogger(__name__)

    def reset(self):
        super().reset()
        self._skipped: List[int] = []

    def process(self, inputs, outputs):
        # Detectron2's, with each image named by its position in the dataset, as on disk.
        read = [(i, o) for i, o in zip(inputs, outputs) if "instances" in o]
        self._skipped.extend(self._ids[i["image_id"]] for i, o in zip(inputs, outputs) if not o)
        super().process(
            [{**i, "image_id": self._ids[i["image_id"]]} for i, _ in read], [o for _, o in read]
        )

    def evaluate(self):
        """Detectron2's, over the images listed in images.txt, or in images_read.txt without those
        skipped."""
        skipped = skipped_image_ids(self._skipped)
        self._image_set_path = os.path.join(self._folder, "images.txt")
        if skipped and comm.is_main_process():
            self._image_set_path = os.path.join(self._folder, "images_read.txt")
            with open(self._image_set_path, "w") as f:
                f.write("\n".join(str(i) for i in self._ids.values() if i not in skipped))
        return super().evaluate()
