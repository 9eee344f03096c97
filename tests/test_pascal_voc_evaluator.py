"""Pascal VOC mAP of a dataset of any layout, with Detectron2's VOC evaluator."""

import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from ltm_d2.evaluation import VOCEvaluator

RECORDS = [
    {
        "file_name": "a.png",
        "image_id": "a b",
        "height": 100,
        "width": 100,
        "annotations": [
            {"bbox": [10.0, 10.0, 50.0, 60.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
            {
                "bbox": [60.0, 20.0, 90.0, 40.0],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": 1,
                "difficult": 1,
            },
        ],
    },
    {
        "file_name": "b.png",
        "image_id": 7,
        "height": 100,
        "width": 100,
        "annotations": [
            {"bbox": [5.0, 5.0, 30.0, 30.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1}
        ],
    },
]


def register(name):
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: RECORDS)
        MetadataCatalog.get(name).set(
            thing_classes=["tree", "dead tree"], evaluator_type="pascal_voc"
        )
    return name


def evaluate(name, tmp_path, detections):
    """`detections`: per record, [(x1, y1, x2, y2, class, score)]."""
    evaluator = VOCEvaluator(register(name), str(tmp_path))
    evaluator.reset()
    for record, found in zip(RECORDS, detections):
        instances = Instances((100, 100))
        instances.pred_boxes = Boxes(
            torch.tensor([d[:4] for d in found], dtype=torch.float32).reshape(-1, 4)
        )
        instances.pred_classes = torch.tensor([d[4] for d in found], dtype=torch.int64)
        instances.scores = torch.tensor([d[5] for d in found], dtype=torch.float32)
        evaluator.process([record], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]


def test_detections_equal_to_the_ground_truth_score_100(tmp_path):
    perfect = [[(10, 10, 50, 60, 0, 0.9)], [(5, 5, 30, 30, 1, 0.8)]]
    assert evaluate("voc_test_perfect", tmp_path, perfect)["AP50"] == 100.0


def test_a_difficult_object_missed_costs_nothing_and_a_missed_object_half_its_class(tmp_path):
    missed = [[(10, 10, 50, 60, 0, 0.9)], []]
    result = evaluate("voc_test_missed", tmp_path, missed)
    assert abs(result["AP50"] - 50.0) < 1e-6  # tree 100, dead tree 0 (its difficult one ignored)


def test_a_box_shifted_off_its_object_is_a_false_positive(tmp_path):
    shifted = [[(40, 40, 80, 90, 0, 0.9)], [(5, 5, 30, 30, 1, 0.8)]]
    assert abs(evaluate("voc_test_shifted", tmp_path, shifted)["AP50"] - 50.0) < 1e-6
