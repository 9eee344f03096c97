# LTM-AF, R-50-FPN, 1x: 39.1 AP on COCO test-dev (paper Table 6). LazyConfig twin of
# ltm_af_R_50_FPN_1x.yaml (Base-LTM-AF.yaml): one point per location on P3-P7, FCOS-style
# l, t, r, b regression, point bags, GIoU localisation likelihood; GroupNorm in the head and the
# FPN. The points and their box transform are those LTMAF.from_config builds for the yacs config.
from detectron2.config import LazyCall as L
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransformLinear

from ltm_d2.modeling import LTMAF

from ..common.ltm import dataloader, lr_multiplier, model, optimizer, train

model._target_ = LTMAF
model.backbone.norm = "GN"
model.head.norm = "GN"
model.head.num_anchors = 1
model.anchor_generator = L(DefaultAnchorGenerator)(
    sizes=[[8], [16], [32], [64], [128]], aspect_ratios=[1.0], strides=[8, 16, 32, 64, 128]
)
model.box2box_transform = L(Box2BoxTransformLinear)(normalize_by_size=True)
model.bbox_reg_weight = 5.5
model.central_region = 0.8

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
