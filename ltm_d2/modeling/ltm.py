"""LTM: RetinaNet trained by learning to match anchors (paper §3.2)."""

from typing import Dict, List

import torch
from fvcore.nn import smooth_l1_loss
from torch import Tensor

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY, RetinaNet
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou

from ..config import MATCHING_MODES
from .bags import anchor_bags
from .matching import freeanchor_losses, freeanchor_suppression, ltm_losses

# Objects whose box is not wider and higher than this are left out of the matching, as Detectron2's
# mapper leaves them out (`filter_empty_instances`): an empty box has no box-regression target.
MIN_BOX_SIZE = 1e-5


def objects_to_match(gt_instances: Instances) -> Instances:
    """
    The objects of one image that take part in training, in every matching mode: those whose box
    is wider and higher than MIN_BOX_SIZE. An empty or degenerate box has no finite regression
    target (log of a zero width), so it is dropped here, as Detectron2's mapper drops it.
    """
    return gt_instances[gt_instances.gt_boxes.nonempty(threshold=MIN_BOX_SIZE)]


def member_targets(gt_boxes: Boxes, bags: Tensor) -> Tensor:
    """(I*K, 4) the box of its object for every member of the (I, K) bags."""
    num_objects, bag_size = bags.shape
    return gt_boxes.tensor[:, None].expand(num_objects, bag_size, 4).reshape(-1, 4)


@META_ARCH_REGISTRY.register()
class LTM(RetinaNet):
    """
    RetinaNet whose anchors are matched to objects by learning (MODEL.LTM.MATCHING):
    "ltm" (positive and negative mean-max matching), "freeanchor" (positive matching only) or
    "topk" (every anchor of a bag is a positive, RetinaNet's losses). The network and inference
    are RetinaNet's: an LTM checkpoint is a RetinaNet checkpoint.
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
            iou_threshold: t1 of FreeAnchor's background suppression ("freeanchor").
            match_alpha: weight of the positive term against the background ("freeanchor").
            match_gamma: focal exponent of the background term ("ltm", "freeanchor").
            kwargs: the arguments of :class:`RetinaNet`, whose focal and box losses "topk" uses.
        """
        super().__init__(**kwargs)
        if matching not in MATCHING_MODES:
            raise ValueError(
                f"MODEL.LTM.MATCHING must be one of {MATCHING_MODES}, got {matching!r}"
            )
        if bag_size < 1:
            raise ValueError(f"MODEL.LTM.BAG_SIZE must be at least 1, got {bag_size}")
        self.matching = matching
        self.bag_size = bag_size
        self.bag_sample = bag_sample
        self.bbox_reg_weight = bbox_reg_weight
        self.match_smooth_l1_beta = match_smooth_l1_beta
        self.iou_threshold = iou_threshold
        self.match_alpha = match_alpha
        self.match_gamma = match_gamma

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
        The training losses from the dense predictions of every level.

        Args:
            anchors: the anchors of each level.
            pred_logits: (N, J_l, C) logits of each level; pred_anchor_deltas: (N, J_l, 4).
        Returns:
            RetinaNet's loss dict ("topk"), or that of :meth:`matching_losses`.
        """
        # The losses are computed in float32 whatever the network's precision: under autocast
        # 1 / (1 - phi)^2 would overflow half precision.
        with torch.autocast(pred_logits[0].device.type, enabled=False):
            pred_logits = [x.float() for x in pred_logits]
            pred_anchor_deltas = [x.float() for x in pred_anchor_deltas]
            if self.matching == "topk":
                gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
                return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
            return self.matching_losses(
                Boxes.cat(anchors),
                cat(pred_logits, dim=1),
                cat(pred_anchor_deltas, dim=1),
                gt_instances,
            )

    def build_bags(self, anchors: Boxes, gt_instances: Instances):
        """Returns the (I, K) bags of one image's objects and the (I, K) IoU of their anchors."""
        return anchor_bags(anchors, gt_instances.gt_boxes, self.bag_size, self.bag_sample)

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

    def matching_losses(
        self, anchors: Boxes, logits: Tensor, deltas: Tensor, gt_instances: List[Instances]
    ) -> Dict[str, Tensor]:
        """
        Args:
            anchors: the J anchors of every image, all levels concatenated.
            logits: (N, J, C) classification logits; deltas: (N, J, 4) box deltas.
        Returns:
            the loss dict of :func:`ltm_losses` or :func:`freeanchor_losses`.
        """
        num_images, num_anchors, _ = logits.shape
        # quality: "ltm": (I, K) IoU of each bag member's predicted box with its object;
        # "freeanchor": (J, C) background suppression. Neither carries a gradient.
        bags, classes, loc_likelihood, quality = [], [], [], []
        for n, gt in enumerate(gt_instances):
            gt = objects_to_match(gt)
            bags_n, _ = self.build_bags(anchors, gt)
            loc_likelihood.append(
                self.localisation_likelihood(anchors, deltas[n], bags_n, gt.gt_boxes)
            )
            with torch.no_grad():
                if self.matching == "ltm":
                    quality.append(self._bag_iou(anchors, deltas[n], bags_n, gt.gt_boxes))
                else:
                    pred_boxes = self.box2box_transform.apply_deltas(deltas[n], anchors.tensor)
                    quality.append(
                        freeanchor_suppression(
                            Boxes(pred_boxes), gt, self.num_classes, self.iou_threshold
                        )
                    )
            bags.append(bags_n + n * num_anchors)
            classes.append(gt.gt_classes)
        bags, classes = cat(bags), cat(classes)
        loc_likelihood, quality = cat(loc_likelihood), cat(quality)
        logits = logits.reshape(num_images * num_anchors, self.num_classes)
        if self.matching == "ltm":
            return ltm_losses(logits, bags, classes, loc_likelihood, quality, self.match_gamma)
        return freeanchor_losses(
            logits,
            bags,
            classes,
            loc_likelihood,
            quality,
            self.match_alpha,
            self.match_gamma,
        )

    def member_boxes(self, anchors: Boxes, deltas: Tensor, bags: Tensor) -> Tensor:
        """(I*K, 4) boxes predicted by the bag members, decoded from the (J, 4) `deltas`."""
        return self.box2box_transform.apply_deltas(
            deltas[bags].reshape(-1, 4), anchors.tensor[bags].reshape(-1, 4)
        )

    def _bag_iou(self, anchors: Boxes, deltas: Tensor, bags: Tensor, gt_boxes: Boxes) -> Tensor:
        """(I, K) IoU of each bag member's predicted box with its object."""
        iou = matched_pairwise_iou(
            Boxes(self.member_boxes(anchors, deltas, bags)), Boxes(member_targets(gt_boxes, bags))
        )
        return iou.view(bags.shape)

    @torch.no_grad()
    def label_anchors(self, anchors, gt_instances):
        """
        "RetinaNet (K anchors)" labelling (paper Table 1): every member of an object's bag is a
        positive of that object (of the object of highest IoU where bags overlap); all other
        anchors are background. Same inputs and outputs as :meth:`RetinaNet.label_anchors`.
        """
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        for gt in gt_instances:
            gt = objects_to_match(gt)
            bags, member_iou = self.build_bags(anchors, gt)  # (I, K), (I, K)
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
