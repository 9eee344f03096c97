"""
Fitting a config's anchors to a dataset's objects, without training: one scale factor for the
anchor sizes and, for LTM, the bag size K (paper §3.2).

**Scale.** The config's anchor structure is kept: its levels and their strides, the sizes of each
level relative to the first (the octave scales, e.g. [x, x * 2^(1/3), x * 2^(2/3)]) and the
aspect ratios. Only the base size of every level changes, to c x its stride, for c in
:data:`SCALES` (RetinaNet's COCO anchors have c = 4, ATSS's c = 8). Each candidate is scored by
:func:`~ltm_d2.analysis.anchor_coverage.dataset_coverage` at the test input size, and c is
chosen by this deterministic rule:

1. coverage first: the largest share of objects with an anchor of IoU >= the foreground threshold
   (MODEL.RETINANET.IOU_THRESHOLDS[-1]), the objects RetinaNet's IoU rule can train through more
   than their one "low-quality" best anchor;
2. among the candidates within :data:`SHARE_TOLERANCE` (2 percentage points) of that share, the
   most positive anchors per object under RetinaNet's rule (larger anchors relative to the stride
   overlap their neighbours more, so an object has more anchors of high IoU);
3. equal figures: the smaller c.

Step 2 alone would push c up without end; anchors absurdly larger than the objects are kept out
by step 1: an anchor of area A reaches IoU t with an object of area a only if a / A >= t (the
object inside the anchor at best), so at t = 0.5 an anchor more than sqrt(2) times an object's
side covers it no longer, and a candidate whose anchors outgrow the objects loses share. The
tolerance lets a larger c give up at most 2% of the objects (the smallest) for its positives. It
was 1 point until training said otherwise, on the bundled tuning split (docs/study.md): 1.5 x
stride covered 69.8% of the objects with 3.63 positives each, 2 x stride 68.6% with 5.10, and
every detector trained with both did better with 2 x stride (RetinaNet 25.9 against 18.5 AP,
LTM 34.3 against 30.3); a point of share is worth less than 40% more positives.

**Bag size.** K is the largest of 5, 10, ..., 50 for which the median object's K-th best anchor of
the fitted anchors has IoU >= the background threshold (MODEL.RETINANET.IOU_THRESHOLDS[0], 0.4):
the bag of a typical object then holds anchors that RetinaNet would not call background, not
anchors that barely touch it (5 when even the 5th is below). On COCO-like objects at 800 px with
RetinaNet's anchors (c = 4) the median 50th-best IoU is about 0.44, so the rule gives the paper's
K = 50; on the bundled 128 px shapes with anchors of 2 x stride it is 0.27 for K = 40 and the rule
gives K = 10, where bags of 10 and 20 trained better than 40 in this project
(docs/study.md, Table 5).
"""

import os
import shlex
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from detectron2.modeling import build_anchor_generator

from .anchor_coverage import ImageObjects, anchor_input_shapes, dataset_coverage, retinanet_matcher

# Candidate base sizes of a level, in multiples of its stride.
SCALES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
# Candidate bag sizes K.
BAG_SIZES = tuple(range(5, 55, 5))
# Candidates whose share of covered objects is this close to the best one compete on positives.
SHARE_TOLERANCE = 0.02


class AnchorScore(NamedTuple):
    """The coverage figures of one set of anchors over a dataset's objects."""

    sizes: List[List[float]]  # per level, its anchor sizes
    share: float  # objects with an anchor of IoU >= the foreground threshold
    positives: float  # positive anchors per object under RetinaNet's IoU rule
    median_best_iou: float
    median_top_iou: np.ndarray  # (K_max,): median over objects of the IoU of the k-th best anchor


class AnchorFit(NamedTuple):
    """The config's anchors, every candidate, and the fitted scale, sizes and bag size."""

    before: AnchorScore
    candidates: List[AnchorScore]  # one per scale of `scales`
    scales: Sequence[float]
    scale: float
    bag_size: int

    @property
    def after(self) -> AnchorScore:
        return self.candidates[list(self.scales).index(self.scale)]


def level_sizes(sizes: Sequence[Sequence[float]], num_levels: int) -> List[List[float]]:
    """MODEL.ANCHOR_GENERATOR.SIZES with one list per level (one list is shared by all levels)."""
    return [
        list(level) for level in (sizes if len(sizes) == num_levels else list(sizes) * num_levels)
    ]


def scaled_sizes(
    sizes: Sequence[Sequence[float]], strides: Sequence[int], scale: float
) -> List[List[float]]:
    """Each level's sizes with its base size set to `scale` x its stride and the ratios between its
    sizes kept; rounded to 0.01 px, the values printed and scored."""
    return [
        [round(scale * stride * s / level[0], 2) for s in level]
        for level, stride in zip(sizes, strides)
    ]


def anchor_score(coverage: Dict, sizes: List[List[float]], fg_threshold: float) -> AnchorScore:
    """The figures of a :func:`dataset_coverage` result."""
    return AnchorScore(
        sizes,
        float((coverage["best_iou"] >= fg_threshold).mean()),
        float(coverage["positives"].mean()),
        float(np.median(coverage["best_iou"])),
        np.median(coverage["top_iou"], axis=0),
    )


def choose_scale(candidates: Sequence[AnchorScore]) -> int:
    """The index of the chosen candidate (module docstring: share, then positives, then the
    first, i.e. the smaller scale of candidates in increasing scale)."""
    best_share = max(c.share for c in candidates)
    eligible = [
        i for i, c in enumerate(candidates) if c.share >= best_share - SHARE_TOLERANCE - 1e-9
    ]
    return max(eligible, key=lambda i: (candidates[i].positives, -i))


def choose_bag_size(median_top_iou: np.ndarray, iou_threshold: float) -> int:
    """The largest K of :data:`BAG_SIZES` whose median K-th best IoU (`median_top_iou[K - 1]`,
    of length >= max(BAG_SIZES)) is >= `iou_threshold`; the smallest when none is."""
    reaching = [k for k in BAG_SIZES if median_top_iou[k - 1] >= iou_threshold]
    return max(reaching, default=BAG_SIZES[0])


def fit_anchors(
    cfg,
    images: Sequence[ImageObjects],
    scales: Sequence[float] = SCALES,
    progress: Optional[Callable[[str, int], None]] = None,
) -> AnchorFit:
    """
    Score the config's anchors and those of every scale on the objects of `images`
    (:func:`input_objects` at the test input size) and choose the scale and the bag size (module
    docstring). `progress(what, n)` is called after each image n of each set of anchors.
    """
    shapes = anchor_input_shapes(cfg)
    strides = [s.stride for s in shapes]
    matcher = retinanet_matcher(cfg)
    thresholds = cfg.MODEL.RETINANET.IOU_THRESHOLDS
    max_bag = max(max(BAG_SIZES), cfg.MODEL.LTM.BAG_SIZE)

    def score(sizes: List[List[float]], what: str) -> AnchorScore:
        candidate = cfg.clone()
        candidate.defrost()
        candidate.MODEL.ANCHOR_GENERATOR.SIZES = sizes
        report = None if progress is None else (lambda done: progress(what, done))
        generator = build_anchor_generator(candidate, shapes)
        coverage = dataset_coverage(generator, matcher, images, max_bag, report)
        return anchor_score(coverage, sizes, thresholds[-1])

    sizes = level_sizes(cfg.MODEL.ANCHOR_GENERATOR.SIZES, len(strides))
    before = score(sizes, "the config's anchors")
    candidates = [score(scaled_sizes(sizes, strides, c), f"c = {c:g}") for c in scales]
    index = choose_scale(candidates)
    bag_size = choose_bag_size(candidates[index].median_top_iou, thresholds[0])
    return AnchorFit(before, candidates, scales, scales[index], bag_size)


def override_opts(sizes: List[List[float]], bag_size: Optional[int]) -> List[str]:
    """KEY VALUE overrides that set these anchor sizes (and bag size, unless None)."""
    opts = ["MODEL.ANCHOR_GENERATOR.SIZES", str([[float(s) for s in level] for level in sizes])]
    return opts + ([] if bag_size is None else ["MODEL.LTM.BAG_SIZE", str(bag_size)])


def override_line(sizes: List[List[float]], bag_size: Optional[int]) -> str:
    """:func:`override_opts` quoted for a shell command line."""
    return shlex.join(override_opts(sizes, bag_size))


def fitted_config(
    config_file: str, output_file: str, sizes: List[List[float]], bag_size: Optional[int]
) -> str:
    """The YAML of a config file at `output_file` that is `config_file` with these values."""
    base = os.path.relpath(
        os.path.abspath(config_file), os.path.dirname(os.path.abspath(output_file))
    )
    lines = [f'_BASE_: "{base}"', "MODEL:", "  ANCHOR_GENERATOR:", "    SIZES:"]
    lines += [f"      - {[float(s) for s in level]}" for level in sizes]
    return (
        "\n".join(lines + ([] if bag_size is None else ["  LTM:", f"    BAG_SIZE: {bag_size}"]))
        + "\n"
    )


def comparison_table(
    fit: AnchorFit, strides: Sequence[int], fg_threshold: float, bag_sizes: Optional[Sequence[int]]
) -> str:
    """Markdown: the config's anchors (row BEFORE) against the fitted ones (AFTER); the IoU of the
    K-th best anchor for K of `bag_sizes` (before, after), left out when None."""
    k_header = "" if bag_sizes is None else " median IoU of the K-th best anchor |"
    lines = [
        f"| anchors | base size / stride | objects with an anchor of IoU >= {fg_threshold} | "
        f"positives per object | median best IoU |{k_header}",
        "|---" * (5 if bag_sizes is None else 6) + "|",
    ]
    for i, (name, score) in enumerate(
        (("BEFORE (config)", fit.before), ("AFTER (fitted)", fit.after))
    ):
        ratios = {round(level[0] / s, 2) for level, s in zip(score.sizes, strides)}
        ratio = f"{ratios.pop():g}" if len(ratios) == 1 else "varies"
        row = (
            f"| {name} | {ratio} | {100 * score.share:.1f}% | {score.positives:.2f} | "
            f"{score.median_best_iou:.2f} |"
        )
        if bag_sizes is not None:
            row += f" {score.median_top_iou[bag_sizes[i] - 1]:.2f} (K={bag_sizes[i]}) |"
        lines.append(row)
    return "\n".join(lines)
