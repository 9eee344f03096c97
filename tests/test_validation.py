"""Bad annotation files are refused before training, naming file, image, annotation and problem."""

import copy
import os

import pytest

from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog

from ltm_d2.data.validation import (
    DatasetError,
    register_checked_coco,
    validate_coco_json,
    validate_training_datasets,
)

from support import tiny_cfg
from support.coco_files import GOOD_COCO, with_changes, write_coco


def error_of(tmp_path, coco=GOOD_COCO, annotation_text=None):
    json_file, image_root = write_coco(tmp_path, coco, annotation_text)
    with pytest.raises(DatasetError) as error:
        validate_coco_json(json_file, image_root)
    message = str(error.value)
    assert message.startswith(json_file), message
    return message


def test_a_good_file_passes_and_is_summarised(tmp_path):
    summary = validate_coco_json(*write_coco(tmp_path))
    assert (summary.num_images, summary.num_annotations, summary.num_categories) == (4, 5, 2)
    assert summary.num_images_without_annotations == 0 and summary.num_boxes_clipped == 0


def test_a_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="missing.json: the annotation file does not exist"):
        validate_coco_json(str(tmp_path / "missing.json"), str(tmp_path))


def test_malformed_json_names_line_and_column(tmp_path):
    message = error_of(tmp_path, annotation_text='{"images": [\n  {"id": 1,,}\n]}')
    assert "not valid JSON" in message and "line 2, column 12" in message


def test_json_that_is_not_a_coco_object(tmp_path):
    assert "expected a list under 'annotations', found nothing" in error_of(
        tmp_path, annotation_text='{"images": [], "categories": []}'
    )


def test_a_missing_image_file(tmp_path):
    message = error_of(tmp_path, with_changes("images", 3, file_name="gone.jpg"))
    assert "image id 3: image file" in message and "gone.jpg does not exist" in message


@pytest.mark.parametrize("width, height", [(-5.0, 10.0), (10.0, -0.5)])
def test_a_box_of_negative_size(tmp_path, width, height):
    message = error_of(tmp_path, with_changes("annotations", 21, bbox=[10.0, 8.0, width, height]))
    assert f"image id 2, annotation id 21: bbox [10.0, 8.0, {width}, {height}]" in message
    assert "expected both >= 0" in message


@pytest.mark.parametrize("width, height", [(0.0, 10.0), (10.0, 0.0)])
def test_a_box_of_zero_size_is_counted_named_and_dropped_by_detectron2s_mapper(
    tmp_path, caplog, width, height
):
    coco = with_changes("annotations", 21, bbox=[10.0, 8.0, width, height])
    json_file, image_root = write_coco(tmp_path, coco)
    assert validate_coco_json(json_file, image_root).num_boxes_empty == 1
    assert "1 box(es) of zero width or height" in caplog.text
    assert "image id 2, annotation id 21" in caplog.text

    register_checked_coco(f"test_zero_size_{width}_{height}", {}, json_file, image_root)
    record = next(
        r for r in DatasetCatalog.get(f"test_zero_size_{width}_{height}") if r["image_id"] == 2
    )
    cfg = tiny_cfg(
        "INPUT.MIN_SIZE_TRAIN", (48,), "INPUT.MAX_SIZE_TRAIN", 64, "INPUT.RANDOM_FLIP", "none"
    )
    instances = DatasetMapper(cfg, is_train=True)(record)["instances"]
    assert len(instances) == len(record["annotations"]) - 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_nan_or_infinite_coordinate(tmp_path, value):
    message = error_of(tmp_path, with_changes("annotations", 12, bbox=[30.0, value, 16.0, 16.0]))
    assert "image id 1, annotation id 12" in message
    assert "has a NaN or infinite value, expected finite numbers" in message


@pytest.mark.parametrize(
    "bbox",
    [
        [64.0, 10.0, 5.0, 5.0],
        [10.0, 48.0, 5.0, 5.0],
        [-20.0, 10.0, 20.0, 5.0],
        [10.0, -9.0, 5.0, 9.0],
    ],
)
def test_a_box_entirely_outside_its_image(tmp_path, bbox):
    message = error_of(tmp_path, with_changes("annotations", 41, bbox=bbox))
    assert "image id 4, annotation id 41" in message
    assert "lies entirely outside its 64 x 48 image" in message


def test_a_box_partly_outside_is_accepted_and_clipped_by_detectron2s_mapper(tmp_path):
    coco = with_changes("annotations", 41, bbox=[50.0, -10.0, 30.0, 30.0])
    json_file, image_root = write_coco(tmp_path, coco)
    assert validate_coco_json(json_file, image_root).num_boxes_clipped == 1

    register_checked_coco("test_partly_outside", {}, json_file, image_root)
    record = next(r for r in DatasetCatalog.get("test_partly_outside") if r["image_id"] == 4)
    cfg = tiny_cfg(
        "INPUT.MIN_SIZE_TRAIN", (48,), "INPUT.MAX_SIZE_TRAIN", 64, "INPUT.RANDOM_FLIP", "none"
    )
    boxes = DatasetMapper(cfg, is_train=True)(record)["instances"].gt_boxes.tensor
    assert boxes.tolist() == [[50.0, 0.0, 64.0, 20.0]]


def test_an_unknown_category_id(tmp_path):
    message = error_of(tmp_path, with_changes("annotations", 11, category_id=7))
    assert "image id 1, annotation id 11: category id 7 is unknown" in message
    assert "expected one of the ids under 'categories' [1, 2]" in message


def test_an_annotation_of_an_unknown_image(tmp_path):
    message = error_of(tmp_path, with_changes("annotations", 21, image_id=99))
    assert "image id 99, annotation id 21: refers to no image" in message


def test_a_duplicate_annotation_id(tmp_path):
    message = error_of(tmp_path, with_changes("annotations", 21, id=11))
    assert "image id 2, annotation id 11: expected a unique integer annotation id" in message


def test_a_malformed_bbox(tmp_path):
    message = error_of(tmp_path, with_changes("annotations", 31, bbox=[0.0, 0.0, "64", 48.0]))
    assert "image id 3, annotation id 31: bbox is [0.0, 0.0, '64', 48.0]" in message


def test_an_image_without_a_size(tmp_path):
    message = error_of(tmp_path, with_changes("images", 2, width=None))
    assert "image id 2: width None and height 48, expected positive numbers" in message


def test_an_empty_annotation_list(tmp_path):
    coco = dict(copy.deepcopy(GOOD_COCO), annotations=[])
    assert "no annotations: expected at least one under 'annotations'" in error_of(tmp_path, coco)


def test_images_without_annotations_are_allowed_and_counted(tmp_path):
    coco = copy.deepcopy(GOOD_COCO)
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 4]
    assert validate_coco_json(*write_coco(tmp_path, coco)).num_images_without_annotations == 1


def test_every_problem_is_listed_at_once(tmp_path):
    coco = with_changes("annotations", 11, category_id=7)
    next(a for a in coco["annotations"] if a["id"] == 21)["bbox"][2] = -1.0
    message = error_of(tmp_path, coco)
    assert "2 problem(s)" in message
    assert "annotation id 11" in message and "annotation id 21" in message


def test_a_registered_checked_dataset_refuses_to_load_bad_annotations(tmp_path):
    coco = with_changes("annotations", 12, bbox=[1.0, 1.0, -3.0, 4.0])
    json_file, image_root = write_coco(tmp_path, coco)
    register_checked_coco("test_checked_bad", {}, json_file, image_root)
    assert MetadataCatalog.get("test_checked_bad").json_file == json_file
    with pytest.raises(DatasetError, match="annotation id 12"):
        DatasetCatalog.get("test_checked_bad")


def test_a_registered_checked_dataset_loads_like_register_coco_instances(tmp_path):
    register_checked_coco("test_checked_good", {}, *write_coco(tmp_path))
    records = DatasetCatalog.get("test_checked_good")
    assert len(records) == 4 and sum(len(r["annotations"]) for r in records) == 5
    assert MetadataCatalog.get("test_checked_good").thing_classes == ["thing", "other"]


def test_more_categories_than_the_model_has_classes(tmp_path):
    register_checked_coco("test_two_categories", {}, *write_coco(tmp_path))
    expected = "2 categories, but the model has MODEL.RETINANET.NUM_CLASSES = 1"
    with pytest.raises(DatasetError, match=expected):
        validate_training_datasets(["test_two_categories"], num_classes=1)


def test_a_changed_file_is_checked_again(tmp_path):
    json_file, image_root = write_coco(tmp_path)
    validate_coco_json(json_file, image_root)
    write_coco(tmp_path, with_changes("annotations", 11, category_id=9))
    os.utime(json_file, ns=(1, 1))  # a different modification time, whatever the clock
    with pytest.raises(DatasetError, match="category id 9 is unknown"):
        validate_coco_json(json_file, image_root)
