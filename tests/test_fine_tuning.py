"""Fine-tuning from another RetinaNet: Detectron2's model-zoo .pkl loaded into an LTM config, the
box deltas converted to its box-regression weights, the classifier of another class count reset."""

import logging
import math
import os
import pickle

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from ltm_d2 import load_config
from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.deploy import plain_retinanet_config
from ltm_d2.errors import UserError

from support import REPO, load_tool, run, tiny_cfg

DETECTRON2_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
LTM_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
FROM_DETECTRON2 = ("MODEL.WEIGHTS_BBOX_REG_WEIGHTS", DETECTRON2_WEIGHTS)


def plain_retinanet(*opts):
    """Detectron2's RetinaNet of the tiny config (plain config, box-regression weights
    (1, 1, 1, 1)), its head moved off its initialisation so that it detects many boxes."""
    cfg = plain_retinanet_config(tiny_cfg(*opts))
    cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS = DETECTRON2_WEIGHTS
    torch.manual_seed(5)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.head.cls_score.bias.fill_(-1.0)
    return model.eval()


def model_zoo_pkl(model, path):
    """`model`'s weights as a file of Detectron2's model zoo: numpy arrays under Detectron2's
    names, no box-regression weights recorded."""
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo"}, f)
    return str(path)


def ltm_model(*opts):
    """The tiny LTM model (box-regression weights (10, 10, 5, 5)) and its config."""
    cfg = tiny_cfg(*opts)
    torch.manual_seed(7)
    return build_model(cfg).eval(), cfg


def detections(model):
    """The detections of `model` on two fixed random 128 px images."""
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 128, 128), generator=g).float() for _ in range(2)]
    with torch.no_grad():
        return [r["instances"] for r in model([{"image": image} for image in images])]


def assert_same_detections(a, b):
    for x, y in zip(a, b):
        assert len(x) > 10
        assert torch.equal(x.pred_classes, y.pred_classes)
        assert torch.equal(x.scores, y.scores)
        torch.testing.assert_close(x.pred_boxes.tensor, y.pred_boxes.tensor, rtol=0, atol=1e-3)


@pytest.fixture
def checkpoint_log(caplog):
    """The checkpointer's log (fvcore's logger, which Detectron2's set-up may keep from the
    root)."""
    logger = logging.getLogger("fvcore.common.checkpoint")
    logger.addHandler(caplog.handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.setLevel(level)
    logger.removeHandler(caplog.handler)


def test_detectron2_model_zoo_retinanet_loaded_into_ltm_detects_the_same_boxes(
    tmp_path, checkpoint_log
):
    source = plain_retinanet()
    target, cfg = ltm_model(*FROM_DETECTRON2)
    assert tuple(cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS) == LTM_WEIGHTS
    SafeCheckpointer(target, cfg=cfg).load(model_zoo_pkl(source, tmp_path / "model_final.pkl"))
    assert_same_detections(detections(target), detections(source))
    assert (
        "head.bbox_pred converted from box-regression weights (1, 1, 1, 1) "
        "(MODEL.WEIGHTS_BBOX_REG_WEIGHTS; the checkpoint records none) to the config's "
        "MODEL.RETINANET.BBOX_REG_WEIGHTS (10, 10, 5, 5): the dx, dy, dw, dh rows of each anchor "
        "(weight and bias) scaled by (10, 10, 5, 5)." in checkpoint_log.text
    )


def test_without_the_conversion_the_same_weights_detect_other_boxes(tmp_path):
    source = plain_retinanet()
    target, _ = ltm_model()
    DetectionCheckpointer(target).load(model_zoo_pkl(source, tmp_path / "model_final.pkl"))
    for loaded, plain in zip(detections(target), detections(source)):
        # The best-scored detection, which NMS keeps in both: same anchor, another box.
        assert loaded.scores[0] == plain.scores[0]
        assert (loaded.pred_boxes.tensor[0] - plain.pred_boxes.tensor[0]).abs().max() > 1.0


def test_a_checkpoint_of_ltm_records_its_weights_and_converts_back_into_a_plain_retinanet(
    tmp_path, checkpoint_log
):
    ltm, _ = ltm_model()
    with torch.no_grad():
        for p in ltm.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        ltm.head.cls_score.bias.fill_(-1.0)
    SafeCheckpointer(ltm, save_dir=str(tmp_path)).save("ltm")
    assert torch.load(tmp_path / "ltm.pth", weights_only=True)["bbox_reg_weights"] == LTM_WEIGHTS
    plain = plain_retinanet()
    cfg = tiny_cfg("MODEL.RETINANET.BBOX_REG_WEIGHTS", DETECTRON2_WEIGHTS)
    SafeCheckpointer(plain, cfg=cfg).load(str(tmp_path / "ltm.pth"))
    assert_same_detections(detections(plain), detections(ltm))
    assert "from box-regression weights (10, 10, 5, 5) (recorded in the checkpoint)" in (
        checkpoint_log.text
    )


def test_the_record_of_the_checkpoint_wins_over_the_config_key(tmp_path, checkpoint_log):
    ltm, cfg = ltm_model(*FROM_DETECTRON2)
    SafeCheckpointer(ltm, save_dir=str(tmp_path)).save("ltm")
    expected = {k: v.clone() for k, v in ltm.state_dict().items()}
    SafeCheckpointer(ltm, cfg=cfg).load(str(tmp_path / "ltm.pth"))
    assert all(torch.equal(v, expected[k]) for k, v in ltm.state_dict().items())
    assert (
        "head.bbox_pred loaded as it is: its box-regression weights (10, 10, 5, 5) (recorded in "
        "the checkpoint) are the config's MODEL.RETINANET.BBOX_REG_WEIGHTS." in checkpoint_log.text
    )


def test_resuming_a_run_loads_its_last_checkpoint_as_it_is(tmp_path):
    ltm, cfg = ltm_model(*FROM_DETECTRON2)
    # A last checkpoint without a record, as written before checkpoints had one.
    torch.save({"model": ltm.state_dict()}, tmp_path / "model_0000001.pth")
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    expected = ltm.head.bbox_pred.weight.clone()
    SafeCheckpointer(ltm, save_dir=str(tmp_path), cfg=cfg).resume_or_load("", resume=True)
    assert torch.equal(ltm.head.bbox_pred.weight, expected)


def test_another_class_count_resets_the_classifier_to_the_prior_and_says_so(
    tmp_path, checkpoint_log
):
    source = plain_retinanet()  # 6 classes
    target, cfg = ltm_model("MODEL.RETINANET.NUM_CLASSES", 2, *FROM_DETECTRON2)
    with torch.no_grad():
        target.head.cls_score.bias.fill_(3.0)
    SafeCheckpointer(target, cfg=cfg).load(model_zoo_pkl(source, tmp_path / "model_final.pkl"))
    prior = -math.log((1 - cfg.MODEL.RETINANET.PRIOR_PROB) / cfg.MODEL.RETINANET.PRIOR_PROB)
    assert torch.allclose(target.head.cls_score.bias, torch.full((18,), prior))
    assert torch.equal(target.head.cls_subnet[0].weight, source.head.cls_subnet[0].weight)
    assert (
        "head.cls_score not loaded: the checkpoint's scores 6 classes for each of 9 anchors per "
        "location, the model's 2 for 9; it keeps RetinaNet's initial weights, its bias set to the "
        "focal-loss prior -3.8918 (MODEL.RETINANET.PRIOR_PROB 0.02)." in checkpoint_log.text
    )
    assert "head.cls_score" not in "".join(
        r.getMessage() for r in checkpoint_log.records if r.levelno >= logging.WARNING
    )


def test_another_anchor_count_leaves_both_output_layers_initialised_and_says_so(
    tmp_path, checkpoint_log
):
    source = plain_retinanet()  # 9 anchors per location
    target, cfg = ltm_model("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0]]", *FROM_DETECTRON2)
    initial = target.head.bbox_pred.weight.clone()
    SafeCheckpointer(target, cfg=cfg).load(model_zoo_pkl(source, tmp_path / "model_final.pkl"))
    assert torch.equal(target.head.bbox_pred.weight, initial)
    assert (
        "head.bbox_pred not loaded: the checkpoint's predicts 9 anchors per location, the "
        "model's 3; it keeps RetinaNet's initialisation." in checkpoint_log.text
    )
    assert (
        "the checkpoint's scores 6 classes for each of 9 anchors per location, the model's 6 for 3"
        in checkpoint_log.text
    )


def test_box_regression_weights_that_are_not_four_positive_numbers_are_refused():
    _, cfg = ltm_model("MODEL.WEIGHTS_BBOX_REG_WEIGHTS", (1.0, 1.0, 0.0))
    with pytest.raises(UserError, match=r"MODEL.WEIGHTS_BBOX_REG_WEIGHTS \(1.0, 1.0, 0.0\)"):
        SafeCheckpointer(torch.nn.Module(), cfg=cfg)


def test_the_own_data_config_from_coco_starts_from_detectron2s_retinanet_and_converts_its_head():
    cfg = load_config(os.path.join(REPO, "configs", "Own-Data", "ltm_R_50_FPN_from_coco.yaml"))
    assert cfg.MODEL.WEIGHTS == (
        "detectron2://COCO-Detection/retinanet_R_50_FPN_1x/190397773/model_final_bfca0b.pkl"
    )
    assert tuple(cfg.MODEL.WEIGHTS_BBOX_REG_WEIGHTS) == DETECTRON2_WEIGHTS
    assert tuple(cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS) == LTM_WEIGHTS
    # Detectron2's COCO RetinaNet has this network: every layer but the classifier loads.
    detectron2_retinanet = plain_retinanet_config(cfg)
    assert detectron2_retinanet.MODEL.BACKBONE.NAME == "build_retinanet_resnet_fpn_backbone"
    assert detectron2_retinanet.MODEL.RESNETS.DEPTH == 50
    assert detectron2_retinanet.MODEL.RETINANET.NUM_CONVS == 4


@pytest.mark.slow
def test_training_from_a_model_zoo_file_logs_the_conversion_and_records_the_configs_weights(
    tmp_path,
):
    weights = model_zoo_pkl(plain_retinanet(), tmp_path / "model_final.pkl")
    output = run(
        "MODEL.WEIGHTS",
        weights,
        "MODEL.WEIGHTS_BBOX_REG_WEIGHTS",
        "(1.0, 1.0, 1.0, 1.0)",
        "SOLVER.MAX_ITER",
        "1",
        "TEST.EVAL_PERIOD",
        "0",
        "OUTPUT_DIR",
        str(tmp_path / "run"),
    )
    assert "head.bbox_pred converted from box-regression weights (1, 1, 1, 1)" in output
    final = torch.load(tmp_path / "run" / "model_final.pth", weights_only=True)
    assert final["bbox_reg_weights"] == LTM_WEIGHTS


def test_a_lazyconfig_run_converts_a_model_zoo_retinanet_like_a_yacs_one(tmp_path, checkpoint_log):
    from detectron2.config import instantiate

    from ltm_d2.model_zoo import get_config

    source = plain_retinanet()
    weights = model_zoo_pkl(source, tmp_path / "retinanet.pkl")
    cfg = get_config("Shapes-Detection/ltm_R_18_FPN_tiny.py")
    cfg.train.output_dir = str(tmp_path / "out")
    cfg.train.init_checkpoint_bbox_reg_weights = DETECTRON2_WEIGHTS
    torch.manual_seed(7)
    model = instantiate(cfg.model).eval()
    lazy_tool = load_tool("tools/lazyconfig_train_net.py")
    lazy_tool.lazy_checkpointer(cfg, model).resume_or_load(weights, resume=False)
    assert_same_detections(detections(model), detections(source))
    assert (
        "converted from box-regression weights (1, 1, 1, 1) "
        "(train.init_checkpoint_bbox_reg_weights; the checkpoint records none)"
    ) in checkpoint_log.text
