"""LTM-AF: learning to match on anchor-free points (paper §3.3)."""

import torch
from fvcore.nn import giou_loss
from torch import Tensor

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransformLinear
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from detectron2.structures import Boxes, Instances

from .bags import point_bags
from .ltm import LTM
from .matchings import LearnedMatching, member_targets


@META_ARCH_REGISTRY.register()
class LTMAF(LTM):
    """
    LTM with one point per location on P3-P7 instead of anchors. Points are placed as Detectron2's
    FCOS places them (a stride-sized box per location) and regress the ReLU'd, stride-normalised
    distances to the box sides (:class:`Box2BoxTransformLinear`). Two things differ from
    :class:`LTM`, and only these: bags are built from normalised point distances
    (:func:`point_bags`), and the localisation likelihood of Eq. 4 is exp(-beta * (1 - GIoU)).
    Matching, background and inference are LTM's; there is no centerness branch and no other
    parameter beyond RetinaNet's head with one anchor per location.
    """

    @configurable
    def __init__(self, *, central_region: float = 0.8, **kwargs):
        """
        Args:
            central_region: points of any level are bag candidates when they lie in this central
                fraction of the box (points of the finest level always are).
            kwargs: the arguments of :class:`LTM`.
        """
        super().__init__(**kwargs)
        if not isinstance(self.matching, LearnedMatching):
            raise ValueError(
                "LTMAF supports MODEL.LTM.MATCHING 'ltm' and 'freeanchor', not "
                f"{self.matching.name!r}"
            )
        self.central_region = central_region
        # The distances l, t, r, b pass through a ReLU. Starting them at one stride instead of 0
        # keeps every point out of the ReLU's dead zone: from zero, a run trained from scratch on
        # the bundled dataset drove every regression output below 0 in its first 40 iterations,
        # after which no box could learn again.
        torch.nn.init.constant_(self.head.bbox_pred.bias, 1.0)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        backbone_shape = ret["backbone"].output_shape()
        feature_shapes = [backbone_shape[f] for f in cfg.MODEL.RETINANET.IN_FEATURES]
        strides = [shape.stride for shape in feature_shapes]
        ret.update(
            head=RetinaNetHead(cfg, feature_shapes, num_anchors=1),
            anchor_generator=DefaultAnchorGenerator(
                sizes=[[s] for s in strides], aspect_ratios=[1.0], strides=strides
            ),
            box2box_transform=Box2BoxTransformLinear(normalize_by_size=True),
            central_region=cfg.MODEL.LTM.POINT_CENTRAL_REGION,
        )
        return ret

    def build_bags(self, anchors: Boxes, gt_instances: Instances) -> Tensor:
        """(I, K) point indices: the point bags of one image's objects (:func:`point_bags`)."""
        bags, _ = point_bags(
            anchors, gt_instances.gt_boxes, self.bag_size, self.central_region, self.bag_sample
        )
        return bags

    def localisation_likelihood(
        self, anchors: Boxes, deltas: Tensor, bags: Tensor, gt_boxes: Boxes
    ) -> Tensor:
        """
        exp(-beta * (1 - GIoU(pred_j, b_i))) for every bag member of one image (§3.3).

        Args:
            deltas: (J, 4) predicted l, t, r, b of all points; bags: (I, K).
        Returns:
            (I, K) likelihoods, differentiable in `deltas`.
        """
        pred_boxes = self.member_boxes(anchors, deltas, bags)
        loss = giou_loss(pred_boxes, member_targets(gt_boxes, bags), reduction="none")  # 1 - GIoU
        return torch.exp(-self.bbox_reg_weight * loss).view(bags.shape)
