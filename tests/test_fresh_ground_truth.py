"""The ground truth a dataset without an annotation file is evaluated against is converted from
its records as they are now, never read from an earlier conversion of other records."""

import csv
import json
import os

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from ltm_d2 import load_config
from ltm_d2.evaluation import VOCEvaluator
from ltm_d2.evaluation.coco_ap import coco_json_file

from support import TINY_CONFIG
from support.user_data import make_images, write_csv


def record(box):
    return {
        "file_name": "a.png",
        "image_id": 1,
        "height": 100,
        "width": 100,
        "annotations": [{"bbox": box, "bbox_mode": 0, "category_id": 0}],
    }


def register(name, box):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [record(box)])
    MetadataCatalog.get(name).set(thing_classes=["thing"])


def boxes_in(json_file):
    return [a["bbox"] for a in json.load(open(json_file))["annotations"]]


@pytest.fixture
def name(request):
    name = f"test_{request.node.name}"
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_changed_records_are_converted_again_into_the_same_folder(tmp_path, name):
    register(name, [10, 10, 50, 50])
    first = coco_json_file(name, str(tmp_path))
    assert boxes_in(first) == [[10, 10, 40, 40]]
    register(name, [20, 30, 60, 90])
    second = coco_json_file(name, str(tmp_path))
    assert second != first and boxes_in(second) == [[20, 30, 40, 60]]


def test_the_conversion_of_earlier_records_is_removed_and_other_datasets_kept(tmp_path, name):
    register(name, [10, 10, 50, 50])
    first = coco_json_file(name, str(tmp_path))
    register(name + "_other", [10, 10, 50, 50])
    other = coco_json_file(name + "_other", str(tmp_path))
    register(name, [20, 30, 60, 90])
    second = coco_json_file(name, str(tmp_path))
    assert not os.path.exists(first) and os.path.exists(second) and os.path.exists(other)
    DatasetCatalog.remove(name + "_other")
    MetadataCatalog.remove(name + "_other")


def test_unchanged_records_reuse_their_conversion(tmp_path, name):
    register(name, [10, 10, 50, 50])
    first = coco_json_file(name, str(tmp_path))
    register(name, [10, 10, 50, 50])
    assert coco_json_file(name, str(tmp_path)) == first


def test_an_edited_csv_test_set_is_evaluated_against_its_new_boxes(tmp_path):
    from ltm_d2.engine import Trainer

    path = write_csv(str(tmp_path), make_images(2, seed=0))
    dataset = f"csv:{path}"
    cfg = load_config(
        TINY_CONFIG,
        ["MODEL.RETINANET.NUM_CLASSES", "0", "DATASETS.TRAIN", f"('{dataset}',)"],
    )
    output = str(tmp_path / "inference")
    before = Trainer.build_evaluator(cfg, dataset, output)._coco_api
    rows = list(csv.reader(open(path)))
    x1, y1, x2, y2 = (int(v) for v in rows[0][1:5])
    rows[0][1:5] = [x1 + 1, y1 + 1, x2 - 1, y2 - 1]  # the user moves a box and drops another
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows[:-1])
    after = Trainer.build_evaluator(cfg, dataset, output)._coco_api
    assert len(after.getAnnIds()) == len(before.getAnnIds()) - 1 == len(rows) - 1
    first = after.loadAnns(after.getAnnIds(imgIds=[after.getImgIds()[0]]))[0]["bbox"]
    assert first == [x1 + 1, y1 + 1, x2 - x1 - 2, y2 - y1 - 2]
    assert MetadataCatalog.get(dataset).json_file.startswith(output)


def voc_ap50(name, folder, box):
    """VOC AP50 of one detection at XYXY `box` on the dataset `name`, evaluated into `folder`."""
    evaluator = VOCEvaluator(name, folder)
    evaluator.reset()
    instances = Instances((100, 100))
    instances.pred_boxes = Boxes(torch.tensor([box], dtype=torch.float32))
    instances.pred_classes = torch.tensor([0])
    instances.scores = torch.tensor([0.9])
    evaluator.process(DatasetCatalog.get(name), [{"instances": instances}])
    return evaluator.evaluate()["bbox"]["AP50"]


def test_voc_ground_truth_of_changed_records_is_read_again_in_the_same_process(tmp_path, name):
    register(name, [10, 10, 50, 50])
    assert voc_ap50(name, str(tmp_path), [10, 10, 50, 50]) == 100.0
    register(name, [50, 50, 90, 90])  # the box moved: the same detection now misses it
    assert voc_ap50(name, str(tmp_path), [10, 10, 50, 50]) == 0.0


@pytest.mark.slow
def test_eval_only_after_editing_the_test_csv_scores_against_the_edited_boxes(tmp_path):
    from support import run
    from support.user_data import CLASSES

    train = write_csv(str(tmp_path / "data"), make_images(4, seed=0), "train")
    val = write_csv(str(tmp_path / "data"), make_images(2, seed=1), "val")
    out = tmp_path / "run"
    data = ["DATASETS.TRAIN", f'("csv:{train}",)', "DATASETS.TEST", f'("csv:{val}",)']
    run(*data, "MODEL.RETINANET.NUM_CLASSES", "0", "OUTPUT_DIR", str(out))
    rows = list(csv.reader(open(val)))
    with open(val, "w", newline="") as f:  # the user drops the objects of one class
        csv.writer(f).writerows([r for r in rows if r[5] != CLASSES[0]] or rows[:1])
    log = run(
        "--eval-only",
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
        "OUTPUT_DIR",
        str(out),
        config=str(out / "config.yaml"),
    )
    assert "Using previously cached" not in log
    written = sorted((out / "inference").glob("ground_truth_*_coco_format.json"))
    counts = [len(json.load(open(p))["annotations"]) for p in written]
    assert counts == [len([r for r in rows if r[5] != CLASSES[0]]) or 1]  # the earlier one removed
