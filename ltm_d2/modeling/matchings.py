"""
The matchings of MODEL.LTM.MATCHING (paper Table 1): how the anchors of each object's bag become
its positives, and the losses that follow. One class per matching, all with the interface

    losses(detector, anchors, pred_logits, pred_anchor_deltas, gt_instances) -> loss dict

of per-level anchors and (N, J_l, C) / (N, J_l, 4) predictions, as Detectron2's dense detectors
pass them. `detector` is the :class:`LTM` (or LTM-AF) model: it gives the bags, the box transform
and the localisation likelihood of Eq. 4, which differ between anchors and points; a matching
gives what is done with them.
"""

from typing import Dict, List

import torch
from torch import Tensor

from detectron2.layers import cat
from detectron2.structures import Boxes, Instances
from detectron2.structures.boxes import matched_pairwise_iou

from ..config import MATCHING_MODES
from .matching import freeanchor_losses, freeanchor_suppression, ltm_losses

# Objects whose box is not wider and higher than this are left out of the matching, as Detectron2's
# mapper leaves them out (`filter_empty_instances`): an empty box has no box-regression target.
MIN_BOX_SIZE = 1e-5


def objects_to_match(gt_instances: Instances) -> Instances:
    """
    The objects of one image that take part in training, in every matching: those whose box is
    wider and higher than MIN_BOX_SIZE. An empty or degenerate box has no finite regression
    target (log of a zero width), so it is dropped here, as Detectron2's mapper drops it.
    """
    return gt_instances[gt_instances.gt_boxes.nonempty(threshold=MIN_BOX_SIZE)]


def member_targets(gt_boxes: Boxes, bags: Tensor) -> Tensor:
    """(I*K, 4) the box of its object for every member of the (I, K) bags."""
    num_objects, bag_size = bags.shape
    return gt_boxes.tensor[:, None].expand(num_objects, bag_size, 4).reshape(-1, 4)


class LearnedMatching:
    """
    A matching learnt from the likelihood phi_ij = p_{j,c_i} * exp(-beta * l_reg) of each member
    j of object i's bag (Eq. 4). For each image it takes the bags (`detector.build_bags`), their
    localisation likelihoods with gradient (`detector.localisation_likelihood`) and the evidence
    this matching reads from the predicted boxes without gradient (:meth:`box_evidence`); then
    :meth:`batch_losses` turns those of the whole batch into the losses.
    """

    name: str  # the value of MODEL.LTM.MATCHING

    def losses(
        self,
        detector,
        anchors: List[Boxes],
        pred_logits: List[Tensor],
        pred_anchor_deltas: List[Tensor],
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        return self.joined_losses(
            detector,
            Boxes.cat(anchors),
            cat(pred_logits, dim=1),
            cat(pred_anchor_deltas, dim=1),
            gt_instances,
        )

    def joined_losses(
        self,
        detector,
        anchors: Boxes,
        logits: Tensor,
        deltas: Tensor,
        gt_instances: List[Instances],
    ) -> Dict[str, Tensor]:
        """
        :meth:`losses` of the levels joined.

        Args:
            anchors: the J anchors of every image, all levels concatenated.
            logits: (N, J, C) classification logits; deltas: (N, J, 4) box deltas.
        """
        num_images, num_anchors, num_classes = logits.shape
        bags, classes, loc_likelihood, evidence = [], [], [], []
        for n, gt in enumerate(gt_instances):
            gt = objects_to_match(gt)
            bags_n = detector.build_bags(anchors, gt)  # (I, K)
            loc_likelihood.append(
                detector.localisation_likelihood(anchors, deltas[n], bags_n, gt.gt_boxes)
            )
            with torch.no_grad():
                evidence.append(self.box_evidence(detector, anchors, deltas[n], bags_n, gt))
            bags.append(bags_n + n * num_anchors)
            classes.append(gt.gt_classes)
        # Joined under the same names, so that the per-image tensors are freed before the loss.
        bags, classes, loc_likelihood, evidence = map(
            cat, (bags, classes, loc_likelihood, evidence)
        )
        logits = logits.reshape(num_images * num_anchors, num_classes)
        return self.batch_losses(logits, bags, classes, loc_likelihood, evidence)

    def box_evidence(
        self, detector, anchors: Boxes, deltas: Tensor, bags: Tensor, gt: Instances
    ) -> Tensor:
        """What the matching reads from one image's (J, 4) predicted `deltas`, without gradient."""
        raise NotImplementedError

    def batch_losses(
        self,
        logits: Tensor,
        bags: Tensor,
        classes: Tensor,
        loc_likelihood: Tensor,
        evidence: Tensor,
    ) -> Dict[str, Tensor]:
        """
        Args:
            logits: (M, C) logits of the M anchors of the batch; bags: (B, K) indices into them.
            classes: (B,) class of each bag's object; loc_likelihood: (B, K), with gradient.
            evidence: the :meth:`box_evidence` of the images, concatenated.
        """
        raise NotImplementedError


class MeanMaxMatching(LearnedMatching):
    """LTM: positive (Eq. 10) and negative (Eq. 25) mean-max matching, focal background
    (Eq. 13 + Eq. 14)."""

    name = "ltm"

    def __init__(self, gamma: float):
        self.gamma = gamma  # focal exponent of the background term

    def box_evidence(self, detector, anchors, deltas, bags, gt):
        """(I, K) IoU of each bag member's predicted box with its object (Eq. 5's quality)."""
        iou = matched_pairwise_iou(
            Boxes(detector.member_boxes(anchors, deltas, bags)),
            Boxes(member_targets(gt.gt_boxes, bags)),
        )
        return iou.view(bags.shape)

    def batch_losses(self, logits, bags, classes, loc_likelihood, evidence):
        return ltm_losses(logits, bags, classes, loc_likelihood, evidence, self.gamma)


class FreeAnchorMatching(LearnedMatching):
    """LTM(M+) = FreeAnchor: positive mean-max matching only, against a focal background
    suppressed where a predicted box covers an object of the class."""

    name = "freeanchor"

    def __init__(self, iou_threshold: float, alpha: float, gamma: float):
        self.iou_threshold = iou_threshold  # t1 of the suppression
        self.alpha = alpha  # weight of the positive term against the background
        self.gamma = gamma  # focal exponent of the background term

    def box_evidence(self, detector, anchors, deltas, bags, gt):
        """(J, C) background suppression S of every anchor and class
        (:func:`freeanchor_suppression`)."""
        pred_boxes = Boxes(detector.box2box_transform.apply_deltas(deltas, anchors.tensor))
        return freeanchor_suppression(pred_boxes, gt, detector.num_classes, self.iou_threshold)

    def batch_losses(self, logits, bags, classes, loc_likelihood, evidence):
        return freeanchor_losses(
            logits, bags, classes, loc_likelihood, evidence, self.alpha, self.gamma
        )


class TopKLabelling:
    """
    "RetinaNet (K anchors)" (paper Table 1): no learnt matching; every member of an object's bag
    is a positive (`detector.label_anchors`) and RetinaNet's focal and box losses follow.
    """

    name = "topk"

    def losses(self, detector, anchors, pred_logits, pred_anchor_deltas, gt_instances):
        gt_labels, gt_boxes = detector.label_anchors(anchors, gt_instances)
        return detector.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)


def build_matching(name: str, iou_threshold: float, alpha: float, gamma: float):
    """The matching of MODEL.LTM.MATCHING `name`, with the MODEL.LTM values it uses."""
    if name == MeanMaxMatching.name:
        return MeanMaxMatching(gamma)
    if name == FreeAnchorMatching.name:
        return FreeAnchorMatching(iou_threshold, alpha, gamma)
    if name == TopKLabelling.name:
        return TopKLabelling()
    raise ValueError(f"MODEL.LTM.MATCHING must be one of {MATCHING_MODES}, got {name!r}")
