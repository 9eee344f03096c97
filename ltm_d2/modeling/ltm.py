"""LTM: RetinaNet trained by learning to match anchors (paper §3.2)."""

from typing import Dict, List

import torch
from fvcore.nn import smooth_l1_loss
from torch import Tensor

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.structures import Boxes, Instances

from .bags import anchor_bags
from .matchings import build_matching, member_targets, objects_to_match


@META_ARCH_REGISTRY.register()
class LTM(RetinaNet):
    """
    RetinaNet whose anchors are matched to objects by learning: the matching of MODEL.LTM.MATCHING
    (modeling/matchings.py; "ltm", "freeanchor" or "topk") gives the losses, from the bags and
    the localisation likelihood this class builds. The network and inference are RetinaNet's: an
    LTM checkpoint is a RetinaNet checkpoint.
    """

    @configurable
    def __init__(
        self,
        *,
        matching: str = "ltm",
        bag_size: int = 40,
        bag_sample: int = 0,
        bbox_reg_weight: float = 0.5,
        match_smooth_l1_beta: float = 1.0 / 9.0,
        iou_threshold: float = 0.6,
        match_alpha: float = 0.5,
        match_gamma: float = 2.0,
        **kwargs,
    ):
        """
        Args:
            matching: one of "ltm", "freeanchor", "topk".
            bag_size: K, the number of anchors in each object's bag.
            bag_sample: S > 0 keeps S random members of each bag; 0 keeps all K.
            bbox_reg_weight: beta of Eq. 4.
            match_smooth_l1_beta: smooth-L1 transition point of the regression loss in Eq. 4.
            iou_threshold, match_alpha, match_gamma: of the matching (:func:`build_matching`).
            kwargs: the arguments of :class:`RetinaNet`, whose focal and box losses "topk" uses.
        """
        super().__init__(**kwargs)
        if bag_size < 1:
            raise ValueError(f"MODEL.LTM.BAG_SIZE must be at least 1, got {bag_size}")
        self.matching = build_matching(matching, iou_threshold, match_alpha, match_gamma)
        self.bag_size = bag_size
        self.bag_sample = bag_sample
        self.bbox_reg_weight = bbox_reg_weight
        self.match_smooth_l1_beta = match_smooth_l1_beta

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(
            matching=cfg.MODEL.LTM.MATCHING,
            bag_size=cfg.MODEL.LTM.BAG_SIZE,
            bag_sample=cfg.MODEL.LTM.BAG_SAMPLE,
            bbox_reg_weight=cfg.MODEL.LTM.BBOX_REG_WEIGHT,
            match_smooth_l1_beta=cfg.MODEL.LTM.SMOOTH_L1_BETA,
            iou_threshold=cfg.MODEL.LTM.IOU_THRESHOLD,
            match_alpha=cfg.MODEL.LTM.FOCAL_LOSS_ALPHA,
            match_gamma=cfg.MODEL.LTM.FOCAL_LOSS_GAMMA,
        )
        return ret

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        return self.dense_losses(anchors, pred_logits, pred_anchor_deltas, gt_instances)

    def dense_losses(
        self,
        anchors: List[Boxes],
        pred_logits: List[Tensor],
        pred_anchor_deltas: List[Tensor],
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        """
        The training losses of the matching from the dense predictions of every level.

        Args:
            anchors: the anchors of each level.
            pred_logits: (N, J_l, C) logits of each level; pred_anchor_deltas: (N, J_l, 4).
        """
        # The losses are computed in float32 whatever the network's precision: under autocast
        # 1 / (1 - phi)^2 would overflow half precision.
        with torch.autocast(pred_logits[0].device.type, enabled=False):
            pred_logits = [x.float() for x in pred_logits]
            pred_anchor_deltas = [x.float() for x in pred_anchor_deltas]
            return self.matching.losses(
                self, anchors, pred_logits, pred_anchor_deltas, gt_instances
            )

    def build_bags(self, anchors: Boxes, gt_instances: Instances) -> Tensor:
        """(I, K) anchor indices: the bags of one image's objects (:func:`anchor_bags`)."""
        return anchor_bags(anchors, gt_instances.gt_boxes, self.bag_size, self.bag_sample)[0]

    def localisation_likelihood(
        self, anchors: Boxes, deltas: Tensor, bags: Tensor, gt_boxes: Boxes
    ) -> Tensor:
        """
        exp(-beta * smooth_l1(d_j, encode(b_i, a_j))) of Eq. 4 for every bag member of one image.

        Args:
            deltas: (J, 4) predicted deltas of all anchors; bags: (I, K).
        Returns:
            (I, K) likelihoods, differentiable in `deltas`.
        """
        targets = self.box2box_transform.get_deltas(
            anchors.tensor[bags].reshape(-1, 4), member_targets(gt_boxes, bags)
        ).view(*bags.shape, 4)
        reg_loss = smooth_l1_loss(
            deltas[bags], targets, self.match_smooth_l1_beta, reduction="none"
        ).sum(-1)
        return torch.exp(-self.bbox_reg_weight * reg_loss)

    def member_boxes(self, anchors: Boxes, deltas: Tensor, bags: Tensor) -> Tensor:
        """(I*K, 4) boxes predicted by the bag members, decoded from the (J, 4) `deltas`."""
        return self.box2box_transform.apply_deltas(
            deltas[bags].reshape(-1, 4), anchors.tensor[bags].reshape(-1, 4)
        )

    @torch.no_grad()
    def label_anchors(self, anchors, gt_instances):
        """
        "RetinaNet (K anchors)" labelling (paper Table 1; the "topk" matching): every member of an
        object's bag is a positive of that object (of the object of highest IoU where bags
        overlap); all other anchors are background. Same inputs and outputs as
        :meth:`RetinaNet.label_anchors`.
        """
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for gt in gt_instances:
            gt = objects_to_match(gt)
            bags, member_iou = anchor_bags(anchors, gt.gt_boxes, self.bag_size, self.bag_sample)
            # IoU inside bags, -1 for "in no bag of this object".
            bag_iou = member_iou.new_full((len(gt), len(anchors)), -1.0)
            bag_iou.scatter_(1, bags, member_iou)
            labels = torch.full((len(anchors),), self.num_classes, device=bags.device)
            boxes = torch.zeros_like(anchors.tensor)
            if len(gt) > 0:
                best_iou, best_object = bag_iou.max(dim=0)  # (J,)
                positive = best_iou >= 0
                labels[positive] = gt.gt_classes[best_object[positive]]
                boxes = gt.gt_boxes.tensor[best_object]
            gt_labels.append(labels)
            matched_gt_boxes.append(boxes)
        return gt_labels, matched_gt_boxes
