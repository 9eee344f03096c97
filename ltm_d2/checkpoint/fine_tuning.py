"""
A RetinaNet head of another detector loaded for this config's: the box deltas converted to the
config's box-regression weights, the classifier of another class count reset to the focal-loss
prior.

Detectron2's Box2BoxTransform decodes a predicted delta d of coordinate c (dx, dy, dw, dh) as
d / w_c, with w = MODEL.RETINANET.BBOX_REG_WEIGHTS (Detectron2's RetinaNet: (1, 1, 1, 1); LTM's
configs: the authors' (10, 10, 5, 5)). A head trained with weights w_source predicts the same
boxes under w_target when its outputs are d * w_target / w_source: the rows of `head.bbox_pred`
(4 per anchor, dx dy dw dh) are scaled by that ratio, weight and bias alike, since the layer is
linear in them.
"""

import logging
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.modeling.box_regression import Box2BoxTransform

from ..errors import UserError

# The key under which a checkpoint of this project records the box-regression weights of its head.
RECORD_KEY = "bbox_reg_weights"
CONFIG_KEY = "MODEL.WEIGHTS_BBOX_REG_WEIGHTS"
LAZY_CONFIG_KEY = "train.init_checkpoint_bbox_reg_weights"  # its LazyConfig form
# The state-dict names of RetinaNetHead's output layers.
CLS_SCORE = "head.cls_score"
BBOX_PRED = "head.bbox_pred"

Weights = Tuple[float, float, float, float]


def box_regression_weights(model: nn.Module) -> Optional[Weights]:
    """The (wx, wy, ww, wh) with which `model` decodes its box deltas, or None when it has no
    Box2BoxTransform (LTM-AF's linear coder has no weights)."""
    transform = getattr(model, "box2box_transform", None)
    if not isinstance(transform, Box2BoxTransform):
        return None
    return tuple(float(w) for w in transform.weights)


def convert_box_deltas(bbox_pred: nn.Conv2d, source: Weights, target: Weights) -> torch.Tensor:
    """
    Scale the output rows of `bbox_pred` ((A * 4, C, k, k) weight, (A * 4,) bias; dx, dy, dw, dh
    of each anchor in turn) from box-regression weights `source` to `target`, in place.

    Returns:
        (4,) the factors target / source, one per coordinate.
    """
    factors = torch.tensor(target, dtype=torch.float64) / torch.tensor(source, dtype=torch.float64)
    rows = factors.repeat(bbox_pred.out_channels // 4)  # (A * 4,)
    with torch.no_grad():
        bbox_pred.weight.mul_(rows.to(bbox_pred.weight).view(-1, 1, 1, 1))
        bbox_pred.bias.mul_(rows.to(bbox_pred.bias))
    return factors


def checked_weights(value: Sequence, where: str) -> Optional[Weights]:
    """`value` as 4 positive floats, None when it is empty; a UserError naming `where`
    otherwise."""
    if len(value) == 0:
        return None
    if len(value) != 4 or not all(isinstance(w, (int, float)) and w > 0 for w in value):
        raise UserError(
            f"{where} {tuple(value)}: give the 4 positive box-regression weights (wx, wy, ww, wh) "
            "that the checkpoint's head was trained with, e.g. (1.0, 1.0, 1.0, 1.0) for "
            "Detectron2's model zoo, or () when the checkpoint records them or has this config's."
        )
    return tuple(float(w) for w in value)


def _text(weights: Sequence[float]) -> str:
    return "(" + ", ".join(f"{w:g}" for w in weights) + ")"


class HeadAdaptation:
    """
    What loading MODEL.WEIGHTS into a RetinaNet (LTM, LTM-AF, RetinaNet) does to its head's output
    layers beyond Detectron2's loading (SafeCheckpointer with a config):

    * `head.bbox_pred`, when loaded, is converted from the box-regression weights it was trained
      with to the model's (:func:`convert_box_deltas`). Those are the checkpoint's record (the
      checkpoints of this project carry one), else MODEL.WEIGHTS_BBOX_REG_WEIGHTS, else taken to
      be the model's own.
    * `head.cls_score`, when the checkpoint's has another shape (another class or anchor count,
      which Detectron2 leaves unloaded with a warning), keeps RetinaNet's initial weights and has
      its bias set to the focal-loss prior, -log((1 - p) / p) with p = MODEL.RETINANET.PRIOR_PROB
      (RetinaNet's initialisation, Lin et al. 2017, §4.1). The weights are not drawn again: each
      worker of a distributed run would draw others.

    Each is logged, with where the weights came from.
    """

    def __init__(
        self,
        fallback_weights: Optional[Weights],
        prior_prob: float,
        fallback_key: str = CONFIG_KEY,
        target_key: str = "MODEL.RETINANET.BBOX_REG_WEIGHTS",
        prior_key: str = "MODEL.RETINANET.PRIOR_PROB",
    ):
        """
        Args:
            fallback_weights: the box-regression weights of a checkpoint that records none, or
                None to take them to be the model's.
            prior_prob: the focal-loss prior of a reset classifier.
            fallback_key, target_key, prior_key: the config keys of `fallback_weights`, of the
                model's box-regression weights and of `prior_prob`, which the log names.
        """
        self.fallback_weights = fallback_weights
        self.prior_prob = prior_prob
        self.fallback_key = fallback_key
        self.target_key = target_key
        self.prior_key = prior_key

    @classmethod
    def from_config(cls, cfg) -> "HeadAdaptation":
        """That of a yacs config: MODEL.WEIGHTS_BBOX_REG_WEIGHTS, MODEL.RETINANET.PRIOR_PROB."""
        return cls(
            checked_weights(cfg.MODEL.WEIGHTS_BBOX_REG_WEIGHTS, CONFIG_KEY),
            cfg.MODEL.RETINANET.PRIOR_PROB,
        )

    @classmethod
    def from_lazy_config(cls, cfg) -> "HeadAdaptation":
        """That of a LazyConfig: train.init_checkpoint_bbox_reg_weights (LAZY_CONFIG_KEY) and the
        head's prior_prob."""
        return cls(
            checked_weights(cfg.train.get("init_checkpoint_bbox_reg_weights", ()), LAZY_CONFIG_KEY),
            cfg.model.head.prior_prob,
            fallback_key=LAZY_CONFIG_KEY,
            target_key="model.box2box_transform.weights",
            prior_key="model.head.prior_prob",
        )

    def adapt(self, model: nn.Module, incompatible, record, logger: logging.Logger):
        """
        Adapt the head of `model` just loaded by fvcore's Checkpointer._load_model, which returned
        `incompatible`; returns it without the head's output layers of another shape, which this
        has handled and logged, among the incorrect shapes and missing keys.
        """
        head = getattr(model, "head", None)
        if not (isinstance(getattr(head, "cls_score", None), nn.Conv2d)) or not isinstance(
            getattr(head, "bbox_pred", None), nn.Conv2d
        ):
            return incompatible
        loaded_shapes = {key: shape for key, shape, _ in incompatible.incorrect_shapes}
        num_anchors = head.bbox_pred.out_channels // 4
        if f"{BBOX_PRED}.weight" in loaded_shapes:
            logger.info(
                f"{BBOX_PRED} not loaded: the checkpoint's predicts "
                f"{loaded_shapes[f'{BBOX_PRED}.weight'][0] // 4} anchors per location, the "
                f"model's {num_anchors}; it keeps RetinaNet's initialisation."
            )
        elif f"{BBOX_PRED}.weight" not in incompatible.missing_keys:
            self._convert(model, head.bbox_pred, record, logger)
        if f"{CLS_SCORE}.weight" in loaded_shapes:
            loaded_anchors = loaded_shapes.get(f"{BBOX_PRED}.weight", (4 * num_anchors,))[0] // 4
            loaded_classes = loaded_shapes[f"{CLS_SCORE}.weight"][0] // loaded_anchors
            self._reset_classifier(
                head.cls_score, num_anchors, loaded_anchors, loaded_classes, logger
            )
        # Logged above; fvcore would warn of them again as of another shape and as missing.
        handled = {
            f"{layer}.{p}"
            for layer in (CLS_SCORE, BBOX_PRED)
            if f"{layer}.weight" in loaded_shapes
            for p in ("weight", "bias")
        }
        return incompatible._replace(
            missing_keys=[k for k in incompatible.missing_keys if k not in handled],
            incorrect_shapes=[e for e in incompatible.incorrect_shapes if e[0] not in handled],
        )

    def _convert(self, model, bbox_pred: nn.Conv2d, record, logger: logging.Logger) -> None:
        target = box_regression_weights(model)
        if target is None:
            return
        if record is not None:
            source, origin = tuple(float(w) for w in record), "recorded in the checkpoint"
        elif self.fallback_weights is not None:
            source, origin = (
                self.fallback_weights,
                f"{self.fallback_key}; the checkpoint records none",
            )
        else:
            logger.info(
                f"{BBOX_PRED} loaded as it is: the checkpoint records no box-regression weights "
                f"and {self.fallback_key} is empty, so they are taken to be the config's "
                f"{self.target_key} {_text(target)}; if the checkpoint was trained "
                f"with others (Detectron2's model zoo: (1, 1, 1, 1)), set {self.fallback_key} to "
                "them."
            )
            return
        if source == target:
            logger.info(
                f"{BBOX_PRED} loaded as it is: its box-regression weights {_text(source)} "
                f"({origin}) are the config's {self.target_key}."
            )
            return
        factors = convert_box_deltas(bbox_pred, source, target)
        logger.info(
            f"{BBOX_PRED} converted from box-regression weights {_text(source)} ({origin}) to the "
            f"config's {self.target_key} {_text(target)}: the dx, dy, dw, dh rows "
            f"of each anchor (weight and bias) scaled by {_text(factors.tolist())}."
        )

    def _reset_classifier(
        self,
        cls_score: nn.Conv2d,
        num_anchors: int,
        loaded_anchors: int,
        loaded_classes: int,
        logger: logging.Logger,
    ) -> None:
        bias = -math.log((1 - self.prior_prob) / self.prior_prob)
        with torch.no_grad():
            cls_score.bias.fill_(bias)
        logger.info(
            f"{CLS_SCORE} not loaded: the checkpoint's scores {loaded_classes} classes for each of "
            f"{loaded_anchors} anchors per location, the model's "
            f"{cls_score.out_channels // num_anchors} for {num_anchors}; it keeps RetinaNet's "
            f"initial weights, its bias set to the focal-loss prior {bias:.4f} "
            f"({self.prior_key} {self.prior_prob:g})."
        )
