"""Backbones beyond Detectron2's own."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelP6P7, build_retinanet_resnet_fpn_backbone


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_fpn_p5_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """
    RetinaNet's ResNet-FPN with P6 computed from P5 (OUT_CHANNELS in, a 3x3 stride-2 conv) instead
    of from C5, as in maskrcnn-benchmark's RetinaNet that the authors' FreeAnchor code builds on.
    P7 is computed from ReLU(P6) in both.
    """
    backbone = build_retinanet_resnet_fpn_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    backbone.top_block = LastLevelP6P7(out_channels, out_channels, in_feature="p5")
    return backbone
