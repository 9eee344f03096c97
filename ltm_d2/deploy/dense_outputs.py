"""
The part of a dense detector (LTM, LTM-AF, RetinaNet) that ``torch.export`` can export with a
dynamic input height and width: from the image to per-level class scores and decoded boxes, whose
shapes depend on the input size only. The rest of the inference is
:class:`ltm_d2.deploy.postprocess.DensePostprocessing`, run on the exported outputs.

What stops ``torch.export`` (torch 2.14, Detectron2 0.7.2) on the whole model, in the order it
meets them, and what :class:`DenseOutputs` does instead (docs/deploy.md):

* ``detectron2/structures/image_list.py:88`` (``ImageList.from_tensors``, called by
  ``DenseDetector.preprocess_image``): ``shapes_to_tensor`` makes tensors of the symbolic height
  and width, and the exporter specialises both to the example's ("Constraints violated (height,
  width)"). Here the image is normalised and padded (bottom and right, with zeros, to a multiple
  of the backbone's size_divisibility) on its sizes directly.
* ``detectron2/modeling/meta_arch/dense_detector.py:21-23`` (``permute_to_N_HWA_K``): whether
  the ``reshape`` after the ``permute`` copies depends on a level being 1x1, which P7 is at
  inputs up to 128 px; the exporter guards on it. Here the transposed predictions are copied
  explicitly, then viewed.
* ``detectron2/modeling/anchor_generator.py:44`` (``_create_grid_offsets``): ``torch.arange``
  between float bounds, whose length is a float ceiling of a symbolic size that the exporter
  guards on. Here the grid is an integer ``arange`` times the stride (the same float32 values),
  plus the generator's own cell anchors.
* ``detectron2/modeling/meta_arch/dense_detector.py:212-214`` (``_decode_per_level_predictions``):
  the candidates above the score threshold (a boolean mask, ``nonzero``) have a data-dependent
  number, and ``detectron2/structures/boxes.py:151`` (``Boxes.__init__``) branches on it being
  0: "GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(4*Min(1000,
  u2), 0)". The top-k over that number, the per-class NMS (``RetinaNet.inference_single_image``)
  and the cut to TEST.DETECTIONS_PER_IMAGE follow, each data-dependent too. A hint such as
  ``torch._check(u2 > 0)`` would be false on an image without candidates, so these steps are
  left out of the export and run after it (:mod:`ltm_d2.deploy.postprocess`).

The boxes are decoded here for every anchor (the eager model decodes only its top-k candidates),
with the model's own box coder, so that the post-processing is the same for anchors (LTM,
RetinaNet) and points (LTM-AF).
"""

from typing import List, Tuple

import torch
from torch import Tensor, nn


def _anchors_per_level(model: nn.Module, features: List[Tensor]) -> List[Tensor]:
    """(H_l x W_l x A, 4) XYXY anchors of each level: Detectron2's DefaultAnchorGenerator grid,
    built from integer positions."""
    generator = model.anchor_generator
    anchors = []
    for feature, stride, cell_anchors in zip(features, generator.strides, generator.cell_anchors):
        height, width = feature.shape[-2:]
        ys = torch.arange(height, dtype=torch.float32, device=feature.device) * stride
        xs = torch.arange(width, dtype=torch.float32, device=feature.device) * stride
        shift_y, shift_x = torch.meshgrid(
            ys + generator.offset * stride, xs + generator.offset * stride, indexing="ij"
        )
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=-1).reshape(-1, 1, 4)
        anchors.append((shifts + cell_anchors.view(1, -1, 4)).reshape(-1, 4))
    return anchors


def _per_location(prediction: Tensor, channels: int) -> Tensor:
    """(N, A x channels, H, W) -> (N, H x W x A, channels), as permute_to_N_HWA_K orders it."""
    batch = prediction.shape[0]
    per_location = prediction.flatten(2).transpose(1, 2)  # (N, H x W, A x channels)
    return per_location.clone(memory_format=torch.contiguous_format).view(batch, -1, channels)


class DenseOutputs(nn.Module):
    """
    A dense detector from one (3, H, W) image, in the config's INPUT.FORMAT and already resized
    as DefaultPredictor resizes it, to the tuple of its per-level class scores (H_l x W_l x A, K)
    (after the sigmoid) then its per-level decoded XYXY boxes (H_l x W_l x A, 4), at the input's
    size, levels in the order of MODEL.RETINANET.IN_FEATURES.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    @property
    def output_names(self) -> List[str]:
        levels = self.model.head_in_features
        return [f"scores_{level}" for level in levels] + [f"boxes_{level}" for level in levels]

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        model = self.model
        normalized = (image.to(model.pixel_mean.device) - model.pixel_mean) / model.pixel_std
        divisor = max(model.backbone.size_divisibility, 1)
        height, width = normalized.shape[-2:]
        padding = (
            0,
            divisor * ((width + divisor - 1) // divisor) - width,
            0,
            divisor * ((height + divisor - 1) // divisor) - height,
        )
        padded = nn.functional.pad(normalized, padding)[None]  # (1, 3, H', W')
        features = model.backbone(padded)
        features = [features[name] for name in model.head_in_features]
        logits, deltas = model.head(features)
        anchors = _anchors_per_level(model, features)
        scores = [_per_location(x, model.num_classes)[0].sigmoid() for x in logits]
        boxes = [
            model.box2box_transform.apply_deltas(_per_location(d, 4)[0], a)
            for d, a in zip(deltas, anchors)
        ]
        return (*scores, *boxes)
