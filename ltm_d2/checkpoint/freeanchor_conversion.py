"""
The authors' FreeAnchor weights (maskrcnn-benchmark's RetinaNet layout) as a Detectron2 RetinaNet
state dict, for configs/COCO-Detection/freeanchor_R_50_FPN_1x_maskrcnn_benchmark.yaml.

Two things differ besides the names:
- maskrcnn-benchmark orders the anchors of a location ratio-major (for each aspect ratio, each
  size), Detectron2's DefaultAnchorGenerator size-major (for each size, each aspect ratio); the
  head's output channels come in one block per anchor (NUM_CLASSES logits, or 4 deltas), so the
  blocks of `cls_logits` and `bbox_pred` are reordered.
- Their P6 is computed from P5 (`build_retinanet_resnet_fpn_p5_backbone`).
Their classifier has no background row (sigmoid, NUM_CLASSES rows per anchor), like Detectron2's.
"""

import re
from typing import Callable, Dict, List, Tuple

import torch

# Their parameter names (regular expressions matched in full) and Detectron2's. Their layerN is
# resN+1; fpn_innerN and fpn_layerN (on C(N+1)) are fpn_lateralN+1 and fpn_outputN+1; the
# FrozenBatchNorm bnK of convK is convK.norm; downsample.0 and .1 are the shortcut and its norm.
_RENAMES: List[Tuple[str, Callable[[re.Match], str]]] = [
    (r"backbone\.body\.stem\.conv1\.weight", lambda m: "backbone.bottom_up.stem.conv1.weight"),
    (r"backbone\.body\.stem\.bn1\.(\w+)", lambda m: f"backbone.bottom_up.stem.conv1.norm.{m[1]}"),
    (
        r"backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.weight",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight",
    ),
    (
        r"backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.(\w+)",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
    ),
    (
        r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.weight",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.weight",
    ),
    (
        r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.(\w+)",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
    (
        r"backbone\.fpn\.fpn_inner(\d)\.(\w+)",
        lambda m: f"backbone.fpn_lateral{int(m[1]) + 1}.{m[2]}",
    ),
    (
        r"backbone\.fpn\.fpn_layer(\d)\.(\w+)",
        lambda m: f"backbone.fpn_output{int(m[1]) + 1}.{m[2]}",
    ),
    (r"backbone\.fpn\.top_blocks\.(p6|p7)\.(\w+)", lambda m: f"backbone.top_block.{m[1]}.{m[2]}"),
    (r"rpn\.head\.cls_tower\.(\d+)\.(\w+)", lambda m: f"head.cls_subnet.{m[1]}.{m[2]}"),
    (r"rpn\.head\.bbox_tower\.(\d+)\.(\w+)", lambda m: f"head.bbox_subnet.{m[1]}.{m[2]}"),
    (r"rpn\.head\.cls_logits\.(\w+)", lambda m: f"head.cls_score.{m[1]}"),
    (r"rpn\.head\.bbox_pred\.(\w+)", lambda m: f"head.bbox_pred.{m[1]}"),
]
# Buffers of theirs that Detectron2 computes itself.
_DROPPED = re.compile(r"rpn\.anchor_generator\..*")


def detectron2_name(name: str) -> str:
    """Detectron2's name of one of their parameters (KeyError if it is none of them)."""
    for pattern, rename in _RENAMES:
        match = re.fullmatch(pattern, name)
        if match:
            return rename(match)
    raise KeyError(name)


def anchor_permutation(num_sizes: int, num_aspect_ratios: int) -> torch.Tensor:
    """
    For each of Detectron2's anchors of a location (index size * num_aspect_ratios + ratio), the
    index of the same anchor in maskrcnn-benchmark (ratio * num_sizes + size). Shape (A,).
    """
    size = torch.arange(num_sizes).repeat_interleave(num_aspect_ratios)
    ratio = torch.arange(num_aspect_ratios).repeat(num_sizes)
    return ratio * num_sizes + size


def reorder_anchor_blocks(tensor: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """The rows of a head output layer (A * C, ...) — one block of C rows per anchor, in their
    order — as blocks in Detectron2's order: block a of the result is block permutation[a]."""
    blocks = tensor.reshape(len(permutation), -1, *tensor.shape[1:])
    return blocks[permutation].reshape(tensor.shape)


def convert_freeanchor_state_dict(
    state_dict: Dict[str, torch.Tensor], num_aspect_ratios: int = 3
) -> Dict[str, torch.Tensor]:
    """
    Their model state dict (keys optionally prefixed by "module.", as saved from
    DistributedDataParallel) as a Detectron2 RetinaNet state dict.

    Args:
        num_aspect_ratios: their ANCHOR_GENERATOR aspect ratios per size (3: 0.5, 1, 2);
            the number of sizes per location follows from the head's shape.

    Raises:
        KeyError, listing every key that is neither converted nor one of their anchor buffers.
        ValueError when the head's rows do not split into anchors and classes.
    """
    state_dict = {re.sub(r"^module\.", "", k): v for k, v in state_dict.items()}
    kept = {k: v for k, v in state_dict.items() if not _DROPPED.fullmatch(k)}
    unknown = [k for k in kept if not any(re.fullmatch(pattern, k) for pattern, _ in _RENAMES)]
    if unknown:
        raise KeyError(f"not parameters of maskrcnn-benchmark's RetinaNet: {unknown}")
    converted = {detectron2_name(k): v for k, v in kept.items()}
    if "head.bbox_pred.weight" not in converted or "head.cls_score.weight" not in converted:
        raise KeyError(
            "no RetinaNet head (rpn.head.cls_logits and rpn.head.bbox_pred) in the state dict"
        )
    num_anchors = converted["head.bbox_pred.weight"].shape[0] // 4
    if num_anchors % num_aspect_ratios or converted["head.cls_score.weight"].shape[0] % num_anchors:
        raise ValueError(
            f"the head has {converted['head.bbox_pred.weight'].shape[0]} regression and "
            f"{converted['head.cls_score.weight'].shape[0]} classification rows: "
            "not 4 and NUM_CLASSES rows "
            f"for each of a multiple of {num_aspect_ratios} anchors"
        )
    permutation = anchor_permutation(num_anchors // num_aspect_ratios, num_aspect_ratios)
    for key in (
        "head.cls_score.weight",
        "head.cls_score.bias",
        "head.bbox_pred.weight",
        "head.bbox_pred.bias",
    ):
        converted[key] = reorder_anchor_blocks(converted[key], permutation)
    return converted
