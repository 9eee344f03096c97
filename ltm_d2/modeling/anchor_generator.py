"""Anchor generators beyond Detectron2's own."""

from typing import List

import torch

from detectron2.modeling.anchor_generator import (
    ANCHOR_GENERATOR_REGISTRY,
    BufferList,
    DefaultAnchorGenerator,
)


@ANCHOR_GENERATOR_REGISTRY.register()
class RoundedRatioAnchorGenerator(DefaultAnchorGenerator):
    """
    Detectron2's anchor generator with the anchor shapes of maskrcnn-benchmark (and so of the
    authors' FreeAnchor code): at a level of stride s, the aspect ratio r (height / width) is
    applied to an s x s box with whole-pixel sides, w0 = round(sqrt(s^2 / r)), h0 = round(w0 * r)
    (half to even), and that box is scaled by size / s. Detectron2's own anchors are exactly
    size / sqrt(r) by size * sqrt(r). The order of a location's anchors stays Detectron2's (for
    each size, each aspect ratio).
    """

    def _calculate_anchors(
        self, sizes: List[List[float]], aspect_ratios: List[List[float]]
    ) -> BufferList:
        return BufferList(
            [
                self.rounded_cell_anchors(st, s, a)
                for st, s, a in zip(self.strides, sizes, aspect_ratios)
            ]
        )

    @staticmethod
    def rounded_cell_anchors(
        stride: int, sizes: List[float], aspect_ratios: List[float]
    ) -> torch.Tensor:
        """XYXY anchors centred at (0, 0), shape (len(sizes) * len(aspect_ratios), 4)."""
        ratios = torch.tensor(aspect_ratios, dtype=torch.float64)
        scales = torch.tensor(sizes, dtype=torch.float64)[:, None] / stride
        base_w = torch.round(torch.sqrt(stride**2 / ratios))
        base_h = torch.round(base_w * ratios)
        w, h = base_w * scales, base_h * scales  # (sizes, ratios)
        return torch.stack([-w / 2, -h / 2, w / 2, h / 2], dim=-1).reshape(-1, 4).float()
