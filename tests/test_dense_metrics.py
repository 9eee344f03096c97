"""Precision, recall, F1 and count error of crowded datasets: hand-worked numbers, the matching
rule, the config keys, the results of Trainer.test and metrics.json."""

import json

import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.engine import launch
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.structures import Boxes, BoxMode, Instances, pairwise_iou
from detectron2.utils import comm

from ltm_d2.engine import Trainer
from ltm_d2.errors import UserError
from ltm_d2.evaluation import DenseObjectEvaluator
from ltm_d2.evaluation.dense_objects import greedy_matching
from ltm_d2.preflight import check_run

from support import TINY_CONFIG, build_tiny_model, load_tool, random_boxes, tiny_cfg

# Objects of each image: (XYXY box, class).
OBJECTS = {
    1: [
        ([0, 0, 10, 10], 0),  # A
        ([40, 0, 50, 10], 1),  # C
        ([60, 60, 70, 70], 0),  # D
    ],
    2: [
        ([0, 0, 10, 10], 0),  # P
        ([10, 0, 20, 10], 0),  # Q, P's neighbour
    ],
    3: [],  # no objects
}
# Detections of each image, in the detector's output order: (XYXY box, class, score).
DETECTIONS = {
    1: [
        ([0, 0, 10, 10], 0, 0.9),  # A exactly
        ([0, 0, 10, 9], 0, 0.8),  # a duplicate of A (IoU 0.9)
        ([40, 0, 50, 10], 0, 0.9),  # C's box, the wrong class
        ([60, 60, 70, 70], 0, 0.3),  # D exactly, below the score threshold
    ],
    2: [
        ([0, 0, 20, 10], 0, 0.7),  # covers P and Q: IoU 0.5 with each
        ([0, 0, 10, 10], 0, 0.7),  # P exactly, the same score, listed second
    ],
    3: [
        ([10, 10, 30, 30], 1, 0.6),  # nothing there
        ([50, 50, 60, 60], 0, 0.4),  # below the score threshold
    ],
}


def register(name, objects, ignored=()):
    """Register `objects` ({image id: [(box, class)]}) as dataset `name`, 100x100 images; the
    (image id, index) pairs in `ignored` are difficult objects."""
    records = [
        {
            "image_id": image_id,
            "file_name": f"{image_id}.png",
            "height": 100,
            "width": 100,
            "annotations": [
                {
                    "bbox": box,
                    "bbox_mode": BoxMode.XYXY_ABS,
                    "category_id": c,
                    "difficult": int((image_id, i) in ignored),
                }
                for i, (box, c) in enumerate(boxes)
            ],
        }
        for image_id, boxes in objects.items()
    ]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)


def output(detections):
    instances = Instances((100, 100))
    instances.pred_boxes = Boxes(torch.tensor([d[0] for d in detections], dtype=torch.float32))
    instances.pred_classes = torch.tensor([d[1] for d in detections])
    instances.scores = torch.tensor([d[2] for d in detections])
    return {"instances": instances}


def evaluate(name, detections, **kwargs):
    evaluator = DenseObjectEvaluator(name, distributed=False, **kwargs)
    image_ids = list(detections)
    evaluator.process(
        [{"image_id": i} for i in image_ids],
        [output(detections[i]) if detections[i] is not None else {} for i in image_ids],
    )
    return evaluator.evaluate()["dense"]


def test_hand_worked_precision_recall_f1_and_count_error():
    """
    IoU threshold 0.4, score threshold 0.5.

    Image 1: the exact box of A (0.9) matches A; its duplicate (0.8) finds A taken: FP. C's box of
    the wrong class: FP, and C is missed. D's exact box scores 0.3 < 0.5: not counted, D missed.
    TP 1, FP 2, FN 2; 3 detections counted for 3 objects: count error 0.

    Image 2, a tie of scores and one of IoUs: both detections score 0.7, so they are taken in
    output order; the wide box comes first and overlaps P and Q equally (IoU 100 / 200 = 0.5), so
    it takes P, the first object. P's exact box then finds P taken (IoU 0 with Q): FP; Q missed.
    TP 1, FP 1, FN 1; count error |2 - 2| = 0.

    Image 3, no objects: the box of score 0.6 is a FP, the one of 0.4 not counted. TP 0, FP 1,
    FN 0; count error |1 - 0| = 1.

    Totals TP 2, FP 4, FN 3: precision 2 / 6 = 33.3%, recall 2 / 5 = 40%,
    F1 = 2 * 2 / (2 * 2 + 4 + 3) = 4 / 11 = 36.4%; count MAE (0 + 0 + 1) / 3 = 1/3.
    """
    register("dense_hand_made", OBJECTS)
    results = evaluate("dense_hand_made", DETECTIONS, iou_threshold=0.4, score_threshold=0.5)
    assert results == pytest.approx(
        {
            "precision": 100 * 2 / 6,
            "recall": 100 * 2 / 5,
            "F1": 100 * 4 / 11,
            "count_MAE": 1 / 3,
            "TP": 2,
            "FP": 4,
            "FN": 3,
        }
    )


def test_an_image_given_no_output_is_left_out():
    """Image 3 skipped as unreadable: image 1 and 2 alone, TP 2, FP 3, FN 3, count MAE 0."""
    register("dense_hand_made", OBJECTS)
    results = evaluate("dense_hand_made", {**DETECTIONS, 3: None})
    assert (results["TP"], results["FP"], results["FN"], results["count_MAE"]) == (2, 3, 3, 0.0)


def test_a_detection_on_a_difficult_object_is_neither_true_nor_false():
    """P difficult in image 2 alone: the wide box takes Q (P is no candidate), P's exact box
    overlaps only P: dropped, not a FP. TP 1, FP 0, FN 0."""
    register("dense_difficult", {2: OBJECTS[2]}, ignored={(2, 0)})
    results = evaluate("dense_difficult", {2: DETECTIONS[2]})
    assert (results["TP"], results["FP"], results["FN"], results["count_MAE"]) == (1, 0, 0, 0.0)


def evaluate_on_two_workers(path):
    """Worker 0 evaluates image 2, worker 1 images 1 and 3; the main process writes the figures."""
    register("dense_hand_made", OBJECTS)
    evaluator = DenseObjectEvaluator("dense_hand_made")
    mine = [i for i in DETECTIONS if i % 2 == comm.get_rank()]
    evaluator.process([{"image_id": i} for i in mine], [output(DETECTIONS[i]) for i in mine])
    results = evaluator.evaluate()
    if comm.is_main_process():
        with open(path, "w") as f:
            json.dump(results["dense"], f)
    else:
        assert results == {}


@pytest.mark.slow
def test_two_workers_gather_the_figures_of_one_process(tmp_path):
    register("dense_hand_made", OBJECTS)
    single = evaluate("dense_hand_made", DETECTIONS)
    launch(evaluate_on_two_workers, 2, dist_url="auto", args=(str(tmp_path / "dense.json"),))
    with open(tmp_path / "dense.json") as f:
        assert json.load(f) == pytest.approx(single)


def sequential_greedy(candidates, iou):
    """The rule taken literally, one detection after another."""
    match, free = [], [True] * candidates.shape[1]
    for d in range(len(candidates)):
        options = [g for g in range(len(free)) if free[g] and candidates[d, g]]
        best = max(options, key=lambda g: (iou[d, g], -g)) if options else -1
        if best >= 0:
            free[best] = False
        match.append(best)
    return match


@pytest.mark.parametrize("seed", range(5))
def test_matching_rounds_give_the_sequential_greedy_matching(seed):
    detections = Boxes(random_boxes(60, (100, 100), seed, min_size=10.0))
    objects = Boxes(random_boxes(40, (100, 100), seed + 100, min_size=10.0))
    iou = pairwise_iou(detections, objects).round(decimals=1)  # rounded: many equal IoUs
    candidates = iou >= 0.3
    assert greedy_matching(candidates, iou).tolist() == sequential_greedy(candidates, iou)


@pytest.mark.parametrize(
    "key, value",
    [
        ("TEST.DENSE_METRICS.IOU_THRESHOLD", 0.0),
        ("TEST.DENSE_METRICS.IOU_THRESHOLD", 1.5),
        ("TEST.DENSE_METRICS.SCORE_THRESHOLD", -0.1),
        ("TEST.DENSE_METRICS.SCORE_THRESHOLD", 2.0),
    ],
)
def test_preflight_refuses_a_threshold_out_of_range(tmp_path, key, value):
    cfg = tiny_cfg("TEST.DENSE_METRICS.ENABLED", True, key, value, "OUTPUT_DIR", str(tmp_path))
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        check_run(cfg, training=False)


def test_config_switch_adds_dense_metrics_and_ap50_to_the_results(tmp_path):
    cfg = tiny_cfg(
        "TEST.DENSE_METRICS.ENABLED",
        True,
        "TEST.DENSE_METRICS.SCORE_THRESHOLD",
        0.05,
        "OUTPUT_DIR",
        str(tmp_path),
    )
    model = build_tiny_model()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(-1.0)
    results = Trainer.test(cfg, model)
    dense = results["dense"]
    assert set(dense) == {"precision", "recall", "F1", "count_MAE", "TP", "FP", "FN", "AP50"}
    assert dense["AP50"] == results["bbox"]["AP50"]
    assert dense["TP"] + dense["FP"] > 0 and dense["count_MAE"] > 0
    assert flatten_results_dict(results)["dense/F1"] == dense["F1"]  # as metrics.json has it


@pytest.mark.slow
def test_periodic_evaluation_writes_the_dense_metrics_to_metrics_json(tmp_path):
    train_net = load_tool("train_net.py")
    args = train_net.argument_parser().parse_args(
        ["--config-file", TINY_CONFIG, "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "1"]
        + ["TEST.EVAL_PERIOD", "1", "TEST.DENSE_METRICS.ENABLED", "True"]
    )
    train_net.main(args)
    metrics = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    evaluated = [m for m in metrics if "bbox/AP50" in m]
    # After one iteration nothing is detected yet: AP50 is NaN, and precision (0 / 0) too.
    assert evaluated[-1]["dense/AP50"] == pytest.approx(evaluated[-1]["bbox/AP50"], nan_ok=True)
    assert {"dense/precision", "dense/recall", "dense/F1", "dense/count_MAE"} <= set(evaluated[-1])
