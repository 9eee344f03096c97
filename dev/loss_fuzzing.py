"""
Random inputs for the training losses, and the check that their values and gradients are finite:
shared by the derandomized fuzz test (tests/test_loss_fuzz.py) and the long campaign
(bench/fuzz.py, `make fuzz`). The paper's numerics contract: no NaN or Inf in any loss or gradient
for logits in [-50, 50], any box deltas, and any boxes the data loader can produce (tiny, huge,
degenerate after clipping, overlapping, identical, outside the image; 0 to 3000 per image).
"""

import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

SIZE = (64, 64)  # H, W of every image
NUM_CLASSES = 6
BOX_KINDS = ("tiny", "huge", "degenerate", "overlapping", "identical", "any")
LOGIT_KINDS = ("uniform", "saturated_low", "saturated_high", "plus_or_minus_50")
MAX_DELTA_SCALE = 50.0


@dataclass(frozen=True)
class ImageCase:
    num_objects: int
    box_kind: str
    seed: int


@dataclass(frozen=True)
class BatchCase:
    images: Tuple[ImageCase, ...]
    logit_kind: str
    delta_scale: float
    seed: int


def draw_case(rng: random.Random, max_objects: int = 3000) -> BatchCase:
    """A random case: 1 to 3 images; object counts small (0-8), crowded or up to `max_objects`."""

    def count():
        return rng.choice([rng.randint(0, 8), rng.randint(0, 1000), rng.randint(0, max_objects)])

    images = tuple(
        ImageCase(count(), rng.choice(BOX_KINDS), rng.randrange(2**31))
        for _ in range(rng.randint(1, 3))
    )
    scale = rng.uniform(0.0, MAX_DELTA_SCALE)
    return BatchCase(images, rng.choice(LOGIT_KINDS), scale, rng.randrange(2**31))


def objects(case: ImageCase) -> Instances:
    """The objects of one image: boxes of `case.box_kind`, clipped to the image as Detectron2's
    mapper clips them (the mapper would then drop the empty ones; they are kept here)."""
    g = torch.Generator().manual_seed(case.seed)
    n, (h, w) = case.num_objects, SIZE
    kind = case.box_kind

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=g)

    if kind == "tiny":
        xy = uniform(0, w, n, 2)
        boxes = torch.cat([xy, xy + 10 ** uniform(-4.9, 0.3, n, 2)], dim=1)  # 1.3e-5 to 2 px
    elif kind == "huge":
        centre, half = uniform(-w, 2 * w, n, 2), uniform(w, 100 * w, n, 2)
        boxes = torch.cat([centre - half, centre + half], dim=1)
    elif kind == "degenerate":  # zero width or height once clipped: on or past a border
        x0 = torch.where(torch.rand(n, generator=g) < 0.5, uniform(w, 2 * w, n), uniform(0, w, n))
        y0 = uniform(-h, h, n)
        boxes = torch.stack([x0, y0, x0 + uniform(0, w, n) * (x0 >= w), y0], dim=1)
    elif kind == "overlapping":
        centre = uniform(0, w, 1, 2) + uniform(-1.0, 1.0, n, 2)
        half = uniform(2.0, w / 2, 1, 2) * uniform(0.9, 1.1, n, 2)
        boxes = torch.cat([centre - half, centre + half], dim=1)
    elif kind == "identical":
        xy = uniform(0, w / 2, 1, 2)
        boxes = torch.cat([xy, xy + uniform(1.0, w / 2, 1, 2)], dim=1).expand(n, 4)
    else:
        xy0, xy1 = uniform(-w, 2 * w, n, 2), uniform(-w, 2 * w, n, 2)
        boxes = torch.cat([torch.minimum(xy0, xy1), torch.maximum(xy0, xy1)], dim=1)
    instances = Instances(SIZE)
    instances.gt_boxes = Boxes(boxes.reshape(-1, 4).contiguous())
    instances.gt_boxes.clip(SIZE)
    instances.gt_classes = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return instances


def logits_and_deltas(case: BatchCase, num_anchors: int):
    """(N, J, C) logits in [-50, 50] of `case.logit_kind` and (N, J, 4) deltas in ±delta_scale,
    both leaves that require a gradient."""
    g = torch.Generator().manual_seed(case.seed)
    shape = (len(case.images), num_anchors, NUM_CLASSES)
    unit = torch.rand(*shape, generator=g)
    logits = {
        "uniform": unit * 100 - 50,
        "saturated_low": unit * 10 - 50,
        "saturated_high": unit * 10 + 40,
        "plus_or_minus_50": torch.where(unit < 0.5, -50.0, 50.0),
    }[case.logit_kind]
    deltas = (torch.rand(len(case.images), num_anchors, 4, generator=g) * 2 - 1) * case.delta_scale
    return logits.requires_grad_(True), deltas.requires_grad_(True)


def anchors_of(model) -> Boxes:
    """The anchors (or points) of `model` for one SIZE image, all levels concatenated."""
    with torch.no_grad():
        features = model.backbone(torch.zeros(1, 3, *SIZE))
    return Boxes.cat(model.anchor_generator([features[f] for f in model.head_in_features]))


def check_case(model, anchors: Boxes, case: BatchCase, bfloat16: bool = False) -> Optional[str]:
    """
    The training losses of `model` (an LTM or LTMAF with NUM_CLASSES classes, in any matching
    mode) on `case`, by the path training takes from the head's outputs; with `bfloat16`, the
    predictions are rounded to bfloat16 and the losses computed under CPU autocast, as in mixed
    precision training. Returns None when every loss and every gradient is finite, else what is
    not.
    """
    gt = [objects(image) for image in case.images]
    logits, deltas = logits_and_deltas(case, len(anchors))
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else nullcontext()
    with EventStorage(0), precision:
        dtype = torch.bfloat16 if bfloat16 else torch.float32
        losses = model.dense_losses([anchors], [logits.to(dtype)], [deltas.to(dtype)], gt)
        sum(losses.values()).backward()
    bad = [name for name, value in losses.items() if not torch.isfinite(value)]
    bad += [
        name
        for name, x in (("logits", logits), ("deltas", deltas))
        if x.grad is not None and not torch.isfinite(x.grad).all()
    ]
    if not bad:
        return None
    values = {name: float(value) for name, value in losses.items()}
    return f"non-finite: {', '.join(bad)} (losses {values})"
