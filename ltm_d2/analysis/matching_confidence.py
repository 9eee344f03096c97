"""
Matching confidence (paper Fig. 6): the weight that the positive mean-max function (Eq. 10)
gives each anchor of an object's bag, on one image, at several checkpoints of a training run;
for LTM and LTM-AF alike, since both only differ in how they build bags and localisation
likelihoods.
"""

from typing import List, NamedTuple, Sequence

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import build_augmentation
from detectron2.layers import cat
from detectron2.structures import Boxes

from ..modeling import LTM
from ..modeling.matching import _positive_likelihood, mean_max_weights


class BagConfidence(NamedTuple):
    """The chosen objects' bags on the network's input image."""

    gt_boxes: Tensor  # (I, 4) XYXY boxes of the objects
    centres: Tensor  # (I, K, 2) x, y of each bag member's anchor (or point) centre
    weights: Tensor  # (I, K) mean-max matching weights, summing to 1 over each bag


def annotated_input(cfg, record: dict) -> dict:
    """
    A dataset record as the model sees it at test time (resized by Detectron2's test resize,
    `build_augmentation(cfg, is_train=False)`), with its annotations kept as `instances` in the
    resized image's coordinates, where a test mapper would drop them.
    """
    mapper = DatasetMapper(
        is_train=True,  # keeps the annotations; the only augmentation is the test-time resize
        augmentations=build_augmentation(cfg, is_train=False),
        image_format=cfg.INPUT.FORMAT,
    )
    return mapper(record)


@torch.no_grad()
def bag_confidence(model: LTM, batched_input: dict, objects: Sequence[int]) -> BagConfidence:
    """
    Args:
        model: an LTM or LTMAF model, in eval mode.
        batched_input: one image from :func:`annotated_input`.
        objects: indices of the chosen objects among the image's annotations.
    """
    if not isinstance(model, LTM):
        raise TypeError(
            f"matching confidence needs an LTM or LTMAF model, got {type(model).__name__}"
        )
    images = model.preprocess_image([batched_input])
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    logits, deltas = model._transpose_dense_predictions(
        model.head(features), [model.num_classes, 4]
    )
    anchors = Boxes.cat(model.anchor_generator(features))
    gt = batched_input["instances"][list(objects)].to(model.device)
    bags = model.build_bags(anchors, gt)  # (I, K)
    loc_likelihood = model.localisation_likelihood(
        anchors, cat(deltas, dim=1)[0], bags, gt.gt_boxes
    )
    _, phi = _positive_likelihood(cat(logits, dim=1)[0], bags, gt.gt_classes, loc_likelihood)
    return BagConfidence(
        gt.gt_boxes.tensor.cpu(), anchors.get_centers()[bags].cpu(), mean_max_weights(phi).cpu()
    )


def accumulated_heat_map(shape, confidences: Sequence[BagConfidence], sigma: float) -> np.ndarray:
    """
    (H, W) sum over checkpoints of every bag member's weight placed at its centre, smoothed by a
    Gaussian of `sigma` pixels (paper Fig. 6, third row).
    """
    heat = np.zeros(shape[:2], dtype=np.float32)
    for confidence in confidences:
        xy = confidence.centres.reshape(-1, 2).round().long().numpy()
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < shape[0])
        np.add.at(
            heat, (xy[inside, 1], xy[inside, 0]), confidence.weights.reshape(-1).numpy()[inside]
        )
    return cv2.GaussianBlur(heat, (0, 0), sigma)


def plot_matching_confidence(
    path: str, rgb: np.ndarray, titles: List[str], confidences: List[BagConfidence], sigma: float
) -> None:
    """
    One panel per checkpoint: the chosen objects (green boxes) and their bag members' centres
    coloured by matching weight, then the accumulated heat map; written to `path`.
    """
    num_panels = len(confidences) + 1
    figure = Figure(figsize=(3.0 * num_panels, 4.0), dpi=80, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, num_panels, squeeze=False)[0]
    vmax = max(float(c.weights.max()) for c in confidences)
    for ax, title, confidence in zip(axes, titles, confidences):
        ax.imshow(rgb, alpha=0.6)
        order = confidence.weights.reshape(-1).argsort()  # the most confident drawn on top
        xy = confidence.centres.reshape(-1, 2)[order]
        dots = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            c=confidence.weights.reshape(-1)[order],
            cmap="Reds",
            vmin=0.0,
            vmax=vmax,
            s=14,
            edgecolors="black",
            linewidths=0.3,
        )
        ax.set_title(title, fontsize=9)
    heat = accumulated_heat_map(rgb.shape, confidences, sigma)
    axes[-1].imshow(rgb, alpha=0.6)
    axes[-1].imshow(heat, cmap="jet", alpha=0.5)
    axes[-1].set_title("accumulated confidence", fontsize=9)
    for ax in axes:
        for x0, y0, x1, y1 in confidences[0].gt_boxes.tolist():
            ax.add_patch(_rectangle(x0, y0, x1, y1))
        ax.set_xlim(0, rgb.shape[1])
        ax.set_ylim(rgb.shape[0], 0)
        ax.set_xlabel("x (px)", fontsize=8)
        ax.set_ylabel("y (px)", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.colorbar(
        dots,
        ax=list(axes[:-1]),
        location="bottom",
        shrink=0.6,
        aspect=30,
        label="mean-max matching weight of the bag members (paper Fig. 6)",
    )
    axes[0].legend(handles=[_rectangle(0, 0, 0, 0, label="object")], loc="lower left", fontsize=7)
    figure.savefig(path)


def _rectangle(x0, y0, x1, y1, label=None):
    return Rectangle(
        (x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5, label=label
    )
