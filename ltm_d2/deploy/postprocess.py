"""
The detections of a dense detector (LTM, LTM-AF, RetinaNet) from the fixed-shape outputs of its
torch.export and dynamo ONNX exports (:class:`ltm_d2.deploy.dense_outputs.DenseOutputs`): the
steps of RetinaNet's inference that have data-dependent shapes, run after the exported network.
It needs torch and torchvision only, and makes the same choices as the eager model in the same
order, so that on the same dense outputs it returns the eager model's detections bitwise.
"""

import json
from dataclasses import asdict, dataclass
from typing import Sequence, Tuple

import torch
import torchvision
from torch import Tensor


@dataclass(frozen=True)
class DensePostprocessing:
    """
    The test-time settings of a dense detector's inference (MODEL.RETINANET.SCORE_THRESH_TEST,
    TOPK_CANDIDATES_TEST, NMS_THRESH_TEST and TEST.DETECTIONS_PER_IMAGE), applied by calling it
    on the per-level scores and boxes of an export. Saved beside an export as postprocessing.json.
    """

    score_threshold: float
    topk_candidates: int  # per level
    nms_threshold: float
    detections_per_image: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> "DensePostprocessing":
        """The settings of a built RetinaNet, LTM or LTMAF model."""
        return cls(
            score_threshold=float(model.test_score_thresh),
            topk_candidates=int(model.test_topk_candidates),
            nms_threshold=float(model.test_nms_thresh),
            detections_per_image=int(model.max_detections_per_image),
        )

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=2)

    @classmethod
    def load(cls, path: str) -> "DensePostprocessing":
        with open(path) as f:
            return cls(**json.load(f))

    def __call__(
        self, scores: Sequence[Tensor], boxes: Sequence[Tensor]
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Detections of one image from its per-level class scores (R_l, K), after the sigmoid, and
        decoded XYXY boxes (R_l, 4) at the network input's size: on each level, the candidates
        whose score is above the threshold, at most `topk_candidates` of the highest; then
        per-class NMS over all levels and the `detections_per_image` highest. Returns boxes
        (N, 4), scores (N,) and classes (N,), by decreasing score; the boxes are not clipped to the
        image (Detectron2's detector_postprocess clips them, with the resize to the original
        image).
        """
        kept_boxes, kept_scores, kept_classes = [], [], []
        for level_scores, level_boxes in zip(scores, boxes):
            candidates = level_scores > self.score_threshold  # (R_l, K)
            candidate_scores = level_scores[candidates]  # (C,), row-major order
            top_scores, top = candidate_scores.topk(
                min(len(candidate_scores), self.topk_candidates)
            )
            anchors, classes = torch.nonzero(candidates)[top].unbind(dim=1)
            kept_boxes.append(level_boxes[anchors])
            kept_scores.append(top_scores)
            kept_classes.append(classes)
        all_boxes = torch.cat(kept_boxes).float()
        all_scores, all_classes = torch.cat(kept_scores), torch.cat(kept_classes)
        keep = torchvision.ops.batched_nms(all_boxes, all_scores, all_classes, self.nms_threshold)
        keep = keep[: self.detections_per_image]
        return all_boxes[keep], all_scores[keep], all_classes[keep]
