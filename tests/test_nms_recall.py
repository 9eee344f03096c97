"""NMS recall (Table 4): hand-worked numbers, the evaluator, and candidates taken before NMS."""

import json
import math

import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, BoxMode, Instances

from ltm_d2.engine import Trainer
from ltm_d2.evaluation import NMSRecallEvaluator, WithCandidatesBeforeNMS, nms_recall, nms_skipped

from support import build_tiny_model, make_input, random_boxes, tiny_cfg

# Two objects. Before NMS, object A has an exact candidate (IoU 1) and a higher-scored one of
# IoU 0.8 with it, which suppresses the exact one (their IoU is 0.8 > 0.5); object B has one
# exact candidate. So the best IoUs are A: 1.0 before, 0.8 after; B: 1.0 before and after.
GT_A, GT_B = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]
CANDIDATES = [GT_A, [0.0, 0.0, 10.0, 8.0], GT_B]
SCORES = [0.6, 0.9, 0.7]
# tau = 0.50..0.75: 2 of 2 objects kept (100%); tau = 0.80, 0.85, 0.90: A's 0.8 is not > tau,
# 1 of 2 (50%). NR = (6 * 100 + 3 * 50) / 9.
EXPECTED = {"NR": 750 / 9, "NR50": 100.0, "NR75": 100.0, "NR80": 50.0, "NR90": 50.0}


def instances(boxes, scores):
    result = Instances((40, 40))
    result.pred_boxes = Boxes(torch.tensor(boxes).reshape(-1, 4))
    result.scores = torch.tensor(scores)
    result.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
    return result


def after_nms(candidates: Instances) -> Instances:
    keep = batched_nms(
        candidates.pred_boxes.tensor, candidates.scores, candidates.pred_classes, 0.5
    )
    return candidates[keep]


def register_hand_made_dataset(name):
    def annotation(box):
        return {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0}

    records = [
        {
            "image_id": 1,
            "height": 40,
            "width": 40,
            "annotations": [annotation(GT_A), annotation(GT_B)],
        },
        {"image_id": 2, "height": 40, "width": 40, "annotations": []},  # skipped: no objects
    ]
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: records)


def test_nms_recall_of_hand_made_best_ious():
    results = nms_recall(torch.tensor([0.8, 1.0]), torch.tensor([1.0, 1.0]))
    assert len(results) == 10  # NR and NR_tau for tau = 0.50, 0.55, ..., 0.90
    for key, value in EXPECTED.items():
        assert results[key] == pytest.approx(value)


def test_nms_recall_is_nan_where_no_candidate_reaches_the_threshold():
    results = nms_recall(torch.tensor([0.6]), torch.tensor([0.7]))
    assert results["NR50"] == 100.0 and math.isnan(results["NR70"]) and math.isnan(results["NR"])


def test_evaluator_on_hand_made_boxes_skips_images_without_objects():
    register_hand_made_dataset("nms_recall_hand_made")
    evaluator = NMSRecallEvaluator("nms_recall_hand_made", distributed=False)
    candidates = instances(CANDIDATES, SCORES)
    kept = after_nms(candidates)
    assert len(kept) == 2
    evaluator.process(
        [{"image_id": 1}, {"image_id": 2}],
        [
            {"instances": kept, "candidates": candidates},
            {"instances": kept, "candidates": candidates},
        ],
    )
    results = evaluator.evaluate()["nms_recall"]
    for key, value in EXPECTED.items():
        assert results[key] == pytest.approx(value)


def test_evaluator_writes_its_figures_to_the_output_dir(tmp_path):
    register_hand_made_dataset("nms_recall_hand_made")
    evaluator = NMSRecallEvaluator(
        "nms_recall_hand_made", distributed=False, output_dir=str(tmp_path)
    )
    candidates = instances(CANDIDATES, SCORES)
    evaluator.process(
        [{"image_id": 1}], [{"instances": after_nms(candidates), "candidates": candidates}]
    )
    results = evaluator.evaluate()["nms_recall"]
    with open(tmp_path / "nms_recall.json") as f:
        assert json.load(f) == pytest.approx(results)


def test_evaluator_refuses_outputs_without_candidates():
    register_hand_made_dataset("nms_recall_hand_made")
    evaluator = NMSRecallEvaluator("nms_recall_hand_made", distributed=False)
    with pytest.raises(KeyError, match="candidates before NMS"):
        evaluator.process([{"image_id": 1}], [{"instances": instances(CANDIDATES, SCORES)}])


@pytest.mark.parametrize("architecture", ["LTM", "LTMAF", "RetinaNet"])
def test_candidates_are_the_detections_before_nms(architecture):
    model = build_tiny_model(
        "MODEL.META_ARCHITECTURE", architecture, "MODEL.RETINANET.SCORE_THRESH_TEST", 0.01
    )
    with torch.no_grad():
        model.head.cls_score.bias.fill_(-1.0)  # many candidates above the score threshold
    model.eval()
    images = [make_input(random_boxes(2, (96, 128), 0), [0, 1], (96, 128))]
    with torch.no_grad():
        (plain,) = model(images)
        (output,) = WithCandidatesBeforeNMS(model)(images)
    assert (model.test_nms_thresh, model.max_detections_per_image) == (0.5, 100)  # restored
    detections, candidates = output["instances"], output["candidates"]
    assert torch.equal(detections.pred_boxes.tensor, plain["instances"].pred_boxes.tensor)
    assert len(candidates) > len(detections) > 0
    # NMS of the candidates, capped at 100 per image, gives the detections.
    kept = after_nms(candidates)[:100]
    assert torch.equal(kept.pred_boxes.tensor, detections.pred_boxes.tensor)


def test_nms_skipped_refuses_a_model_that_is_not_a_dense_detector():
    with pytest.raises(TypeError, match="dense detector"):
        with nms_skipped(torch.nn.Linear(1, 1)):
            pass


@pytest.mark.slow
def test_config_switch_adds_nms_recall_to_the_coco_results(tmp_path):
    cfg = tiny_cfg(
        "TEST.NMS_RECALL",
        True,
        "OUTPUT_DIR",
        str(tmp_path),
        "MODEL.RETINANET.SCORE_THRESH_TEST",
        0.0,
    )
    model = build_tiny_model()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(-1.0)
    results = Trainer.test(cfg, model)
    assert "AP" in results["bbox"]
    assert set(results["nms_recall"]) == {
        "NR",
        "NR50",
        "NR55",
        "NR60",
        "NR65",
        "NR70",
        "NR75",
        "NR80",
        "NR85",
        "NR90",
    }
    assert 0 < results["nms_recall"]["NR50"] <= 100
