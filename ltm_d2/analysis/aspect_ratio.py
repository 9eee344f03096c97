"""
Aspect ratio analysis (paper §4.2, Fig. 7 and Fig. 8): a category's aspect ratio is the mean
of max(w/h, h/w) over its ground-truth boxes; the AP gain of one model over another is fitted
against it by a straight line, whose slope says whether the gain grows for slender categories.
"""

from typing import Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pycocotools.coco import COCO


def category_aspect_ratios(coco_gt: COCO, cat_ids: Sequence[int]) -> np.ndarray:
    """
    (C,) mean of max(w/h, h/w) over the non-crowd boxes of each category of `cat_ids` (NaN for a
    category without boxes; boxes of zero width or height are left out).
    """
    anns = [a for a in coco_gt.dataset["annotations"] if not a.get("iscrowd", 0)]
    wh = np.array([a["bbox"][2:4] for a in anns], dtype=np.float64).reshape(-1, 2)
    categories = np.array([a["category_id"] for a in anns])
    valid = (wh > 0).all(axis=1)
    ratio = np.zeros(len(wh))
    ratio[valid] = np.maximum(wh[valid, 0] / wh[valid, 1], wh[valid, 1] / wh[valid, 0])
    member = (categories[None] == np.asarray(cat_ids)[:, None]) & valid[None]  # (C, N)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (member * ratio[None]).sum(axis=1) / member.sum(axis=1)


def fit_line(x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    """Least-squares slope and intercept of y against x, over the points where both are finite."""
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.sum() < 2:
        raise ValueError(
            "fitting a line needs at least two categories with an AP and an aspect ratio"
        )
    slope, intercept = np.polyfit(x[finite], y[finite], 1)
    return float(slope), float(intercept)


def _new_figure(size):
    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_gain_against_aspect_ratio(
    path: str,
    aspect_ratios: np.ndarray,
    gains: np.ndarray,
    category_names: Sequence[str],
    names: Sequence[str],
    dataset_name: str,
) -> None:
    """
    Fig. 7: each category's AP gain of the second model over the first against its aspect ratio,
    with the fitted line, written to `path`.
    """
    slope, intercept = fit_line(aspect_ratios, gains)
    figure = _new_figure((6.4, 4.4))
    ax = figure.add_subplot()
    ax.scatter(aspect_ratios, gains, color="tab:blue", label="category")
    for x, y, name in zip(aspect_ratios, gains, category_names):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    xs = np.linspace(np.nanmin(aspect_ratios), np.nanmax(aspect_ratios), 2)
    ax.plot(
        xs, slope * xs + intercept, color="tab:red", label=f"fit: slope {slope:+.2f} AP per unit"
    )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("mean aspect ratio max(w/h, h/w) of the category")
    ax.set_ylabel(f"AP gain, {names[1]} - {names[0]} (points)")
    ax.set_title(f"AP gain against aspect ratio, {dataset_name}")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path)


def plot_category_ap(
    path: str,
    aspect_ratios: np.ndarray,
    aps: Sequence[np.ndarray],
    category_names: Sequence[str],
    names: Sequence[str],
    dataset_name: str,
) -> None:
    """
    Fig. 8: per-category AP of both models (bars) and the gain of the second (line, right axis),
    categories ordered by aspect ratio, written to `path`.
    """
    order = np.argsort(aspect_ratios)
    x = np.arange(len(order))
    figure = _new_figure((max(6.4, 0.8 * len(order) + 2), 4.4))
    ax = figure.add_subplot()
    width = 0.4
    for k, (name, ap) in enumerate(zip(names, aps)):
        ax.bar(x + (k - 0.5) * width, ap[order], width, label=f"AP {name}")
    gain_ax = ax.twinx()
    gain_ax.plot(
        x, (aps[1] - aps[0])[order], color="black", marker="o", label=f"gain of {names[1]}"
    )
    gain_ax.axhline(0.0, color="grey", linewidth=0.8)
    gain_ax.set_ylabel("AP gain (points)")
    labels = [f"{category_names[i]}\n{aspect_ratios[i]:.1f}" for i in order]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("category (mean aspect ratio), by increasing aspect ratio")
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 1.25 * max(np.nanmax(ap) for ap in aps) + 1)  # room for the legend
    ax.set_title(f"Per-category AP, {dataset_name}")
    handles, texts = ax.get_legend_handles_labels()
    more_handles, more_texts = gain_ax.get_legend_handles_labels()
    ax.legend(handles + more_handles, texts + more_texts, loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
