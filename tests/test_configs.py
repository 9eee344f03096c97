"""Every shipped config loads with safe YAML; the defaults are the authors' (docs/method.md)."""
import glob
import os

import pytest

from ltm_d2 import load_config

from support import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def load(path):
    return load_config(path)


def test_there_are_configs():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_config_loads_without_unsafe_yaml(path):
    cfg = load(path)
    assert cfg.MODEL.LTM.MATCHING in ("ltm", "freeanchor", "topk")


def test_ltm_config_has_the_authors_ltm_defaults():
    cfg = load(os.path.join(REPO, "configs/COCO-Detection/ltm_R_50_FPN_1x.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "LTM"
    assert (cfg.MODEL.LTM.MATCHING, cfg.MODEL.LTM.BAG_SIZE, cfg.MODEL.LTM.BBOX_REG_WEIGHT) == ("ltm", 40, 0.5)
    assert cfg.MODEL.LTM.SMOOTH_L1_BETA == pytest.approx(1 / 9)
    assert tuple(cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS) == (10, 10, 5, 5)
    assert cfg.MODEL.RETINANET.PRIOR_PROB == 0.02
    assert cfg.SOLVER.BASE_LR == 0.005 and cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 10


def test_freeanchor_config_has_the_official_freeanchor_defaults():
    cfg = load(os.path.join(REPO, "configs/COCO-Detection/freeanchor_R_50_FPN_1x.yaml"))
    ltm = cfg.MODEL.LTM
    assert (ltm.MATCHING, ltm.BAG_SIZE, ltm.BBOX_REG_WEIGHT, ltm.SMOOTH_L1_BETA) == ("freeanchor", 50, 0.75, 0.11)
    assert (ltm.IOU_THRESHOLD, ltm.FOCAL_LOSS_ALPHA, ltm.FOCAL_LOSS_GAMMA) == (0.6, 0.5, 2.0)
    assert cfg.SOLVER.BASE_LR == 0.01 and not cfg.SOLVER.CLIP_GRADIENTS.ENABLED


def test_retinanet_baseline_has_the_inputs_and_schedule_of_ltm():
    ltm = load(os.path.join(REPO, "configs/COCO-Detection/ltm_R_50_FPN_1x.yaml"))
    base = load(os.path.join(REPO, "configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    assert base.MODEL.META_ARCHITECTURE == "RetinaNet"
    for key in ("INPUT", "DATASETS"):
        assert base[key] == ltm[key]
    assert (base.SOLVER.STEPS, base.SOLVER.MAX_ITER, base.SOLVER.IMS_PER_BATCH) == (
        ltm.SOLVER.STEPS, ltm.SOLVER.MAX_ITER, ltm.SOLVER.IMS_PER_BATCH)


def test_a_config_with_a_python_tag_is_refused(tmp_path):
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text('_BASE_: "%s"\nMODEL:\n  LTM:\n    BAG_SIZE: !!python/object/apply:eval ["40"]\n'
                      % os.path.join(REPO, "configs", "Base-LTM.yaml"))
    with pytest.raises(Exception, match="python/object/apply:eval"):
        load(str(unsafe))
