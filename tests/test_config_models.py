"""The model of every shipped config builds on the CPU and trains for one forward pass."""

import glob
import os

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.modeling.meta_arch import retinanet

from ltm_d2 import load_config

from support import REPO, make_input

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
_backbones = {}
build_backbone_of_detectron2 = retinanet.build_backbone


def build_backbone_once_per_geometry(cfg, input_shape=None):
    """
    Detectron2's build_backbone, shared by the configs whose backbones are the same network, with
    its features computed once per input: building and running a ResNet-101 take seconds, and the
    detectors around the backbone are what the configs vary.
    """
    key = (
        len(cfg.MODEL.PIXEL_MEAN),
        cfg.MODEL.BACKBONE.dump(),
        cfg.MODEL.RESNETS.dump(),
        cfg.MODEL.FPN.dump(),
    )
    if key not in _backbones:
        backbone = build_backbone_of_detectron2(cfg, input_shape)
        features = {}

        def forward_once_per_input(x, compute=backbone.forward):
            image = x.numpy().tobytes()
            if image not in features:
                features[image] = compute(x)
            return features[image]

        backbone.forward = forward_once_per_input
        _backbones[key] = backbone
    return _backbones[key]


def test_every_paper_table_row_has_a_config():
    names = {os.path.relpath(p, os.path.join(REPO, "configs")) for p in CONFIGS}
    r50 = ("retinanet", "retinanet_topk", "freeanchor", "ltm", "ltm_af")
    table_rows = [
        *(f"COCO-Detection/{d}_R_50_FPN_1x.yaml" for d in r50),
        *(f"COCO-Detection/{d}_R_101_FPN_1x.yaml" for d in ("retinanet", "ltm", "ltm_af")),
        *(f"COCO-Detection/{d}_R_101_FPN_2x_ms.yaml" for d in ("freeanchor", "ltm", "ltm_af")),
        *(f"COCO-Detection/{d}_X_101_64x4d_FPN_2x_ms.yaml" for d in ("ltm", "ltm_af")),
        *(f"COCO-Ablations/ltm_R_50_FPN_1x_S40_K{k}.yaml" for k in (80, 120, 160)),
        *(f"COCO-Ablations/ltm_R_50_FPN_1x_K{k}.yaml" for k in (10, 20, 30, 50)),
        *(f"COCO-Ablations/ltm_R_50_FPN_1x_beta{b}.yaml" for b in ("0.3", "0.4", "0.6", "0.7")),
    ]
    assert [row for row in table_rows if row not in names] == []


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_config_model_builds_and_runs_one_training_forward_pass(path, monkeypatch, storage):
    monkeypatch.setattr(retinanet, "build_backbone", build_backbone_once_per_geometry)
    cfg = load_config(path, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    if cfg.MODEL.RETINANET.NUM_CLASSES == 0:  # Own-Data: read from the user's dataset
        cfg.MODEL.RETINANET.NUM_CLASSES = 3
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE
    if cfg.MODEL.META_ARCHITECTURE != "RetinaNet":
        assert (model.matching.name, model.bag_size, model.bag_sample, model.bbox_reg_weight) == (
            cfg.MODEL.LTM.MATCHING,
            cfg.MODEL.LTM.BAG_SIZE,
            cfg.MODEL.LTM.BAG_SAMPLE,
            cfg.MODEL.LTM.BBOX_REG_WEIGHT,
        )
    model.train()
    with torch.no_grad():
        losses = model([make_input([[8.0, 6.0, 40.0, 30.0]], [0], (64, 64))])
    assert losses and all(torch.isfinite(loss) for loss in losses.values())
