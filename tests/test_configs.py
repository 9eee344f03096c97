"""Every shipped config loads with safe YAML; each detector keeps its own recipe everywhere."""

import glob
import os

import pytest

from detectron2.engine import DefaultTrainer

from ltm_d2 import load_config

from support import REPO, TINY_CONFIG, run

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
COCO_CONFIGS = [p for p in CONFIGS if os.path.basename(os.path.dirname(p)).startswith("COCO-")]
OTHER_CONFIGS = [p for p in CONFIGS if p not in COCO_CONFIGS and "Base-LTM" not in p]


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
    assert (cfg.MODEL.LTM.MATCHING, cfg.MODEL.LTM.BAG_SIZE, cfg.MODEL.LTM.BBOX_REG_WEIGHT) == (
        "ltm",
        40,
        0.5,
    )
    assert cfg.MODEL.LTM.SMOOTH_L1_BETA == pytest.approx(1 / 9)
    assert tuple(cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS) == (10, 10, 5, 5)
    assert cfg.MODEL.RETINANET.PRIOR_PROB == 0.02
    assert cfg.SOLVER.BASE_LR == 0.005 and cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 10


def test_freeanchor_config_has_the_official_freeanchor_defaults():
    cfg = load(os.path.join(REPO, "configs/COCO-Detection/freeanchor_R_50_FPN_1x.yaml"))
    ltm = cfg.MODEL.LTM
    assert (ltm.MATCHING, ltm.BAG_SIZE, ltm.BBOX_REG_WEIGHT, ltm.SMOOTH_L1_BETA) == (
        "freeanchor",
        50,
        0.75,
        0.11,
    )
    assert (ltm.IOU_THRESHOLD, ltm.FOCAL_LOSS_ALPHA, ltm.FOCAL_LOSS_GAMMA) == (0.6, 0.5, 2.0)
    assert cfg.SOLVER.BASE_LR == 0.01 and not cfg.SOLVER.CLIP_GRADIENTS.ENABLED


def test_retinanet_baseline_has_the_inputs_and_schedule_of_ltm():
    ltm = load(os.path.join(REPO, "configs/COCO-Detection/ltm_R_50_FPN_1x.yaml"))
    base = load(os.path.join(REPO, "configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    assert base.MODEL.META_ARCHITECTURE == "RetinaNet"
    for key in ("INPUT", "DATASETS"):
        assert base[key] == ltm[key]
    assert (base.SOLVER.STEPS, base.SOLVER.MAX_ITER, base.SOLVER.IMS_PER_BATCH) == (
        ltm.SOLVER.STEPS,
        ltm.SOLVER.MAX_ITER,
        ltm.SOLVER.IMS_PER_BATCH,
    )


# Each detector's own recipe (docs/recipes.md): the settings that are the detector's, not the
# data's.
RECIPE_KEYS = (
    "MODEL.META_ARCHITECTURE",
    "SOLVER.BASE_LR",
    "SOLVER.CLIP_GRADIENTS.ENABLED",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE",
    "MODEL.RETINANET.BBOX_REG_WEIGHTS",
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA",
    "MODEL.RETINANET.PRIOR_PROB",
    "MODEL.RETINANET.IOU_THRESHOLDS",
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA",
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA",
    "MODEL.RETINANET.NORM",
    "MODEL.LTM.MATCHING",
    "MODEL.LTM.BAG_SAMPLE",
    "MODEL.LTM.BBOX_REG_WEIGHT",
    "MODEL.LTM.SMOOTH_L1_BETA",
    "MODEL.LTM.IOU_THRESHOLD",
    "MODEL.LTM.FOCAL_LOSS_ALPHA",
    "MODEL.LTM.FOCAL_LOSS_GAMMA",
    "MODEL.LTM.POINT_CENTRAL_REGION",
)
# COCO config of each detector -> its configs on the bundled dataset.
RECIPES = {
    "retinanet_R_50_FPN_1x": ("retinanet_R_18_FPN_demo", "retinanet_R_50_FPN_256"),
    "retinanet_topk_R_50_FPN_1x": ("retinanet_topk_R_18_FPN_demo", "retinanet_topk_R_50_FPN_256"),
    "freeanchor_R_50_FPN_1x": ("freeanchor_R_18_FPN_demo", "freeanchor_R_50_FPN_256"),
    "ltm_R_50_FPN_1x": ("ltm_R_18_FPN_demo", "ltm_R_50_FPN_256"),
    "ltm_af_R_50_FPN_1x": ("ltm_af_R_18_FPN_demo", "ltm_af_R_50_FPN_256"),
}


def recipe(cfg):
    values = {}
    for key in RECIPE_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
        values[key] = node
    if not values["SOLVER.CLIP_GRADIENTS.ENABLED"]:
        del values["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"]
    return values


@pytest.mark.parametrize("coco, shapes", [(c, s) for c, names in RECIPES.items() for s in names])
def test_a_detector_trains_on_its_coco_recipe_on_the_bundled_dataset(coco, shapes):
    coco_cfg = load(os.path.join(REPO, "configs", "COCO-Detection", coco + ".yaml"))
    shapes_cfg = load(os.path.join(REPO, "configs", "Shapes-Detection", shapes + ".yaml"))
    coco_recipe, shapes_recipe = recipe(coco_cfg), recipe(shapes_cfg)
    if coco.startswith("ltm_af"):  # GroupNorm in the head is LTM-AF's; every shapes net has it
        assert coco_recipe["MODEL.RETINANET.NORM"] == "GN"
    coco_recipe.pop("MODEL.RETINANET.NORM"), shapes_recipe.pop("MODEL.RETINANET.NORM")
    assert shapes_recipe == coco_recipe


def test_anchors_and_bag_size_are_shared_by_the_detectors_of_the_bundled_dataset():
    ltm = load(os.path.join(REPO, "configs/Shapes-Detection/ltm_R_18_FPN_demo.yaml"))
    for name in ("retinanet", "retinanet_topk", "freeanchor"):
        cfg = load(os.path.join(REPO, f"configs/Shapes-Detection/{name}_R_18_FPN_demo.yaml"))
        assert cfg.MODEL.ANCHOR_GENERATOR == ltm.MODEL.ANCHOR_GENERATOR
        assert cfg.MODEL.LTM.BAG_SIZE == ltm.MODEL.LTM.BAG_SIZE
        assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.INPUT) == (
            ltm.SOLVER.MAX_ITER,
            ltm.SOLVER.STEPS,
            ltm.INPUT,
        )


@pytest.mark.parametrize("network", ["R_18_FPN_scratch", "R_50_FPN"])
def test_the_own_data_retinanet_is_its_ltm_config_on_retinanets_loss_settings(network):
    ltm = load(os.path.join(REPO, f"configs/Own-Data/ltm_{network}.yaml"))
    retinanet = load(os.path.join(REPO, f"configs/Own-Data/retinanet_{network}.yaml"))
    coco = recipe(load(os.path.join(REPO, "configs/COCO-Detection/retinanet_R_50_FPN_1x.yaml")))
    own = recipe(retinanet)
    for key in ("SOLVER.BASE_LR", "MODEL.RETINANET.NORM"):  # the data's and the network's
        coco.pop(key), own.pop(key)
    assert own == coco
    for key in ("INPUT", "DATASETS", "TEST", "DATALOADER", "SEED"):
        assert retinanet[key] == ltm[key]
    assert retinanet.MODEL.ANCHOR_GENERATOR == ltm.MODEL.ANCHOR_GENERATOR
    assert retinanet.MODEL.BACKBONE == ltm.MODEL.BACKBONE and retinanet.MODEL.FPN == ltm.MODEL.FPN
    assert (retinanet.SOLVER.MAX_ITER, retinanet.SOLVER.STEPS, retinanet.SOLVER.IMS_PER_BATCH) == (
        ltm.SOLVER.MAX_ITER,
        ltm.SOLVER.STEPS,
        ltm.SOLVER.IMS_PER_BATCH,
    )


def test_the_tiny_config_that_tests_train_with_fixes_its_seed():
    """A new seed at each run could let a 4-iteration model detect something at one run and
    nothing at the next (no "Evaluation results" printed)."""
    assert load(TINY_CONFIG).SEED >= 0


def test_a_training_run_of_a_test_without_a_fixed_seed_is_refused_before_it_starts(tmp_path):
    with pytest.raises(AssertionError, match="set SEED"):
        run("OUTPUT_DIR", str(tmp_path), "SEED", "-1")
    assert not any(tmp_path.iterdir())


def test_a_config_with_a_python_tag_is_refused(tmp_path):
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text(
        '_BASE_: "%s"\nMODEL:\n  LTM:\n    BAG_SIZE: !!python/object/apply:eval ["40"]\n'
        % os.path.join(REPO, "configs", "Base-LTM.yaml")
    )
    with pytest.raises(Exception, match="python/object/apply:eval"):
        load(str(unsafe))


def test_there_are_coco_configs():
    assert len(COCO_CONFIGS) >= 20


@pytest.mark.parametrize("path", COCO_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_coco_config_is_defined_for_8_gpus_of_2_images(path):
    solver = load(path).SOLVER
    assert (solver.REFERENCE_WORLD_SIZE, solver.IMS_PER_BATCH) == (8, 16)


@pytest.mark.parametrize(
    "workers, batch, lr, max_iter, steps, warmup, checkpoint",
    [
        (1, 2, 0.000625, 720000, (480000, 640000), 8000, 40000),
        (2, 4, 0.00125, 360000, (240000, 320000), 4000, 20000),
        (4, 8, 0.0025, 180000, (120000, 160000), 2000, 10000),
        (16, 32, 0.01, 45000, (30000, 40000), 500, 2500),
    ],
)
def test_coco_schedule_follows_the_number_of_gpus(
    workers, batch, lr, max_iter, steps, warmup, checkpoint
):
    """Two images per GPU: the same images and LR per image as 90k iterations of 16 at 0.005."""
    cfg = load(os.path.join(REPO, "configs/COCO-Detection/ltm_R_50_FPN_1x.yaml"))
    solver = DefaultTrainer.auto_scale_workers(cfg, workers).SOLVER
    assert (solver.IMS_PER_BATCH, solver.MAX_ITER, tuple(solver.STEPS)) == (batch, max_iter, steps)
    assert (solver.WARMUP_ITERS, solver.CHECKPOINT_PERIOD) == (warmup, checkpoint)
    assert solver.BASE_LR == pytest.approx(lr, rel=1e-12)


@pytest.mark.parametrize("path", OTHER_CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_shapes_and_own_data_configs_give_the_total_batch_whatever_the_workers(path):
    assert load(path).SOLVER.REFERENCE_WORLD_SIZE == 0
