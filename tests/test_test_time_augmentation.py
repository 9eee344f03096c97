"""Multi-scale and flip testing of dense detectors: boxes in original coordinates, one merge."""

import json

import pytest
import torch

from detectron2.data.transforms import ResizeTransform
from detectron2.structures import Boxes, Instances

from ltm_d2.modeling import DenseDetectorWithTTA
from ltm_d2.modeling.test_time_augmentation import merge_detections

from support import detecting_model, make_input, random_boxes, run, tiny_cfg

SIZE = (64, 96)  # H, W


def tta(model, min_sizes, flip, *opts):
    cfg = tiny_cfg(
        "TEST.AUG.MIN_SIZES",
        str(tuple(min_sizes)),
        "TEST.AUG.MAX_SIZE",
        "1000",
        "TEST.AUG.FLIP",
        str(flip),
        *opts,
    )
    return DenseDetectorWithTTA(cfg, model)


def uint8_input(image=None, seed=0):
    """An input as the test loader gives it: a uint8 (3, H, W) image and its original size."""
    x = make_input(random_boxes(2, SIZE, seed), [0, 1], SIZE, seed=seed)
    x["image"] = (x["image"] if image is None else image).to(torch.uint8)
    return x


def detections(model, x):
    with torch.no_grad():
        (result,) = model([x])
    return result["instances"]


@pytest.mark.parametrize("meta_arch", ["LTM", "LTMAF", "RetinaNet"])
def test_one_scale_without_flip_gives_exactly_the_plain_models_detections(device, meta_arch):
    model = detecting_model(meta_arch, device=device)
    x = uint8_input()
    plain = detections(model, x)
    augmented = detections(tta(model, [SIZE[0]], False), x)
    assert len(plain) > 10
    assert torch.equal(augmented.pred_boxes.tensor, plain.pred_boxes.tensor)
    assert torch.equal(augmented.scores, plain.scores)
    assert torch.equal(augmented.pred_classes, plain.pred_classes)
    assert augmented.image_size == plain.image_size == SIZE


def test_boxes_of_a_doubled_image_come_back_halved_into_original_coordinates():
    model = detecting_model()
    x = uint8_input()
    resize = ResizeTransform(*SIZE, 2 * SIZE[0], 2 * SIZE[1])
    doubled_image = resize.apply_image(x["image"].permute(1, 2, 0).numpy()).copy()
    doubled = dict(x, image=torch.from_numpy(doubled_image).permute(2, 0, 1))
    plain_on_doubled = detections(model, doubled)  # rescaled by the model to height, width
    augmented = detections(tta(model, [2 * SIZE[0]], False), x)
    assert len(plain_on_doubled) > 10
    assert torch.allclose(
        augmented.pred_boxes.tensor, plain_on_doubled.pred_boxes.tensor, atol=1e-4
    )
    assert torch.equal(augmented.pred_classes, plain_on_doubled.pred_classes)
    assert augmented.image_size == SIZE


def test_a_flipped_copy_of_an_image_gives_mirrored_detections(device):
    model = tta(detecting_model(device=device), [40, 64], True)
    x = uint8_input()
    mirrored = uint8_input(image=x["image"].flip(-1))
    ours, theirs = detections(model, x), detections(model, mirrored)
    assert len(ours) > 10
    boxes = theirs.pred_boxes.tensor
    unmirrored = torch.stack(
        [SIZE[1] - boxes[:, 2], boxes[:, 1], SIZE[1] - boxes[:, 0], boxes[:, 3]], 1
    )
    assert torch.allclose(ours.pred_boxes.tensor, unmirrored, atol=1e-4)
    assert torch.allclose(ours.scores, theirs.scores)
    assert torch.equal(ours.pred_classes, theirs.pred_classes)


def test_flip_testing_changes_the_detections_of_a_non_symmetric_image():
    model = detecting_model()
    x = uint8_input()
    without_flip = detections(tta(model, [SIZE[0]], False), x)
    with_flip = detections(tta(model, [SIZE[0]], True), x)
    assert len(with_flip) > 0
    assert not torch.equal(with_flip.scores, without_flip.scores)


def test_merging_keeps_at_most_the_models_detection_limit():
    model = detecting_model("LTM", "TEST.DETECTIONS_PER_IMAGE", "7")
    x = uint8_input()
    assert len(detections(tta(model, [48], False), x)) == 7
    assert len(detections(tta(model, [48, 64], True), x)) == 7


def test_merge_keeps_the_highest_scores_up_to_the_limit():
    # 100 disjoint boxes of one class on a 10 x 10 grid, scores in shuffled order.
    corners = torch.stack(torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij"), -1)
    corners = corners.reshape(-1, 2) * 10
    scores = torch.randperm(100, generator=torch.Generator().manual_seed(0)).float() / 100
    instances = Instances(
        (100, 100),
        pred_boxes=Boxes(torch.cat([corners, corners + 8], 1)),
        scores=scores,
        pred_classes=torch.zeros(100, dtype=torch.int64),
    )
    merged = merge_detections(instances, nms_thresh=0.5, max_detections=30)
    assert len(merged) == 30
    assert torch.equal(merged.scores, scores.sort(descending=True).values[:30])


def test_merge_suppresses_overlaps_within_a_class_only():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.5, 0, 10.5, 10], [0.5, 0, 10.5, 10]])
    instances = Instances(
        (20, 20),
        pred_boxes=Boxes(boxes),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        pred_classes=torch.tensor([0, 0, 1]),
    )
    merged = merge_detections(instances, nms_thresh=0.5, max_detections=100)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7])
    assert merged.pred_classes.tolist() == [0, 1]


def test_only_dense_detectors_are_accepted():
    with pytest.raises(TypeError, match="DenseDetector"):
        DenseDetectorWithTTA(tiny_cfg(), torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_train_net_eval_only_also_evaluates_with_test_time_augmentation(tmp_path):
    out = tmp_path / "eval"
    log = run(
        "--eval-only",
        "MODEL.WEIGHTS",
        "",
        "MODEL.RETINANET.SCORE_THRESH_TEST",
        "0.01",
        "TEST.AUG.ENABLED",
        "True",
        "TEST.AUG.MIN_SIZES",
        "(128, 160)",
        "TEST.AUG.MAX_SIZE",
        "160",
        "OUTPUT_DIR",
        str(out),
    )
    assert "Running inference with test-time augmentation" in log
    assert log.count("Evaluation results for bbox") == 2
    plain = json.load(open(out / "inference" / "coco_instances_results.json"))
    augmented = json.load(open(out / "inference_TTA" / "coco_instances_results.json"))
    assert plain and augmented and plain != augmented
