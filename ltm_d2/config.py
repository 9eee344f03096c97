"""Config keys of the ltm_d2 project (paper §3, §4.1), and loading a config file with them."""

import os
import re
from typing import Sequence

import torch
import yaml

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .data.user_datasets import register_config_datasets
from .errors import UserError

MATCHING_MODES = ("ltm", "freeanchor", "topk")


def add_ltm_config(cfg):
    """
    Add the MODEL.LTM keys to a Detectron2 config. The defaults are those of the authors' LTM
    code; `configs/COCO-Detection/freeanchor_*.yaml` sets the official FreeAnchor values.
    """
    cfg.MODEL.LTM = CN()
    # How anchors are matched to objects:
    #   "ltm":        positive (Eq. 10) and negative (Eq. 25) mean-max matching + focal background
    #   "freeanchor": positive matching only, LTM(M+) = FreeAnchor (NeurIPS 2019)
    #   "topk":       every anchor of a bag is a positive, RetinaNet's losses ("K anchors")
    cfg.MODEL.LTM.MATCHING = "ltm"
    # K: the number of anchors of highest IoU with an object that form its bag.
    cfg.MODEL.LTM.BAG_SIZE = 40
    # S > 0 keeps S anchors drawn at random from the K of each bag (paper Table 3); 0 keeps K.
    cfg.MODEL.LTM.BAG_SAMPLE = 0
    # beta of Eq. 4: weight of the regression loss inside the localisation likelihood.
    cfg.MODEL.LTM.BBOX_REG_WEIGHT = 0.5
    # Transition point of the smooth-L1 regression loss inside Eq. 4.
    cfg.MODEL.LTM.SMOOTH_L1_BETA = 1.0 / 9.0
    # t1 of FreeAnchor's background suppression ("freeanchor" mode only).
    cfg.MODEL.LTM.IOU_THRESHOLD = 0.6
    # Weight of the positive term against the background term ("freeanchor" mode only).
    cfg.MODEL.LTM.FOCAL_LOSS_ALPHA = 0.5
    # Exponent of the focal background term.
    cfg.MODEL.LTM.FOCAL_LOSS_GAMMA = 2.0
    # LTM-AF: points of any level are bag candidates inside this central fraction of the box
    # (points of the finest level always are).
    cfg.MODEL.LTM.POINT_CENTRAL_REGION = 0.8
    # The box-regression weights (as MODEL.RETINANET.BBOX_REG_WEIGHTS) that the head in
    # MODEL.WEIGHTS was trained with, for a checkpoint that does not record them: Detectron2's
    # model zoo, (1.0, 1.0, 1.0, 1.0). Its box deltas are converted to this config's on loading
    # (checkpoint/fine_tuning.py). Empty: the checkpoint's record (every checkpoint of this
    # project has one), else this config's own, loaded as they are.
    cfg.MODEL.WEIGHTS_BBOX_REG_WEIGHTS = ()
    # Evaluate NMS recall (NR, NR_tau of paper Table 4) beside COCO AP; runs inference twice.
    cfg.TEST.NMS_RECALL = False
    # The figures of crowded datasets beside COCO AP / VOC mAP (evaluation/dense_objects.py):
    # precision, recall, F1, mean absolute count error per image, AP50, as results["dense"].
    cfg.TEST.DENSE_METRICS = CN()
    cfg.TEST.DENSE_METRICS.ENABLED = False
    # A detection is a true positive at IoU >= this with an unmatched object of its class
    # (DeepForest's 0.4).
    cfg.TEST.DENSE_METRICS.IOU_THRESHOLD = 0.4
    # Only detections of score >= this count (the boxes that demo/demo.py draws by default).
    cfg.TEST.DENSE_METRICS.SCORE_THRESHOLD = 0.5

    # SOLVER.AMP.ENABLED asks for mixed precision; where the run is decides what it means
    # (engine/precision.py): on a GPU, autocast in this dtype ("float16", or "bfloat16" where the
    # GPU has it); on a CPU, bfloat16 where the CPU computes it natively, float32 otherwise.
    cfg.SOLVER.AMP.PRECISION = "float16"

    # Training stops once more than this share of the training images could not be read (each is
    # skipped and logged); 0 stops at the first.
    cfg.DATALOADER.MAX_BAD_IMAGE_FRACTION = 0.01

    # The class names the model is trained on. Empty: read from a user's dataset given as
    # "format:path" in DATASETS.TRAIN (docs/own_data.md), which also sets NUM_CLASSES when it is 0;
    # a run's saved config.yaml holds them, and later runs refuse data with other classes.
    cfg.DATASETS.CLASS_NAMES = ()
    # Keep the checkpoint of best validation METRIC (a key of the evaluation results, "bbox/AP"
    # for COCO AP and Pascal VOC mAP) as model_best.pth; every TEST.EVAL_PERIOD iterations.
    cfg.TEST.BEST_CHECKPOINT = CN()
    cfg.TEST.BEST_CHECKPOINT.METRIC = ""
    cfg.TEST.BEST_CHECKPOINT.MODE = "max"

    # Images larger than the network input (aerial orthomosaics, slides) cut into overlapping
    # square tiles (ltm_d2/tiling/): training images become one record per tile, and the test
    # (Trainer.test, demo/demo.py) detects on tiles of the whole image, then merges by NMS.
    cfg.INPUT.TILING = CN()
    # Side of a tile in pixels of the original image; 0 turns tiling off. Images not larger than
    # it are used whole; each tile is then resized like a whole image (MIN_SIZE_*, MAX_SIZE_*).
    cfg.INPUT.TILING.SIZE = 0
    # Fraction of a tile's side shared with its neighbour (0 <= OVERLAP < 1).
    cfg.INPUT.TILING.OVERLAP = 0.2
    # A box with less than this share of its area inside a tile is dropped from that tile's
    # training record; one with at least it is clipped to the tile.
    cfg.INPUT.TILING.MIN_VISIBLE = 0.5

    # Training augmentations added to Detectron2's resize (INPUT.MIN_SIZE_TRAIN) and flip
    # (INPUT.RANDOM_FLIP), of whole images and tiles alike (data/augmentation.py); all off.
    cfg.INPUT.AUGMENT = CN()
    # Flip each image upside down with probability 0.5, besides INPUT.RANDOM_FLIP's flip.
    cfg.INPUT.AUGMENT.VERTICAL_FLIP = False
    # Rotate each image by 0, 90, 180 or 270 degrees, each as likely (exact: no interpolation).
    cfg.INPUT.AUGMENT.ROTATE_90 = False
    # (low, high): large-scale jitter in place of the shortest-edge resize: the image resized to
    # fit a square of SCALE_JITTER_SIZE times a scale drawn in [low, high], then a random square
    # of SCALE_JITTER_SIZE cut from it (padded where smaller); () is off.
    cfg.INPUT.AUGMENT.SCALE_JITTER = ()
    # Side in pixels of that square; set with SCALE_JITTER.
    cfg.INPUT.AUGMENT.SCALE_JITTER_SIZE = 0
    # (low, high): the brightness, contrast, saturation of each image scaled by a factor drawn in
    # [low, high] (1 keeps the image), e.g. (0.8, 1.2); () is off.
    cfg.INPUT.AUGMENT.BRIGHTNESS = ()
    cfg.INPUT.AUGMENT.CONTRAST = ()
    cfg.INPUT.AUGMENT.SATURATION = ()


def load_config(config_file: str, opts: Sequence = ()) -> CN:
    """
    Detectron2's default config with the MODEL.LTM keys, `config_file` merged with safe YAML only
    (a Python tag is refused), then the KEY VALUE overrides `opts`. A config asking for CUDA on a
    machine without a GPU runs on the CPU. The user's datasets it names as "format:path" are
    registered, and the class names and count set from them.
    """
    flags = [o for o in opts if isinstance(o, str) and o.startswith("--")]
    if flags:
        raise UserError(
            f"{flags[0]} comes after the KEY VALUE overrides, where it would be read as a config "
            "key: put every --flag before the overrides."
        )
    cfg = get_cfg()
    add_ltm_config(cfg)
    try:
        cfg.merge_from_file(config_file, allow_unsafe=False)
    except OSError as e:
        named = e.filename or config_file
        if os.path.abspath(named) == os.path.abspath(config_file):
            raise UserError(f"{config_file}: cannot read the config file ({e.strerror}).") from e
        raise UserError(
            f"{named}: no such file, named by _BASE_ in {config_file} (or in a file it inherits "
            "from): fix the _BASE_ path, relative to the file that holds it."
        ) from e
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        raise UserError(
            f"{_yaml_place(e, config_file)}: not a valid config file: {problem}. Fix the YAML "
            "there (only plain YAML is read: no Python tags)."
        ) from e
    except KeyError as e:
        key = _unknown_key(e)
        raise UserError(
            f"{_key_place(config_file, key)}: unknown config key {key}: check its spelling "
            "(Detectron2's keys, and ltm_d2/config.py for MODEL.LTM)."
        ) from e
    except (ValueError, AssertionError) as e:  # a value of the wrong type
        raise UserError(f"{config_file}: {e}") from e
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:  # unknown key, odd list, wrong type
        if "Non-existent" not in str(e):
            raise UserError(f"command line overrides: {e}") from e
        raise UserError(
            f"command line override {_unknown_key(e)}: unknown config key: check its spelling."
        ) from e
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    register_config_datasets(cfg)
    return cfg


def _unknown_key(error: Exception) -> str:
    """The key of yacs' "Non-existent (config) key: KEY" error."""
    return str(error.args[0] if error.args else error).rsplit(": ", 1)[-1]


def _key_place(config_file: str, key: str) -> str:
    """ "FILE:LINE" of the line of `config_file` that sets the last part of `key`, or "FILE"."""
    name = re.escape(key.rsplit(".", 1)[-1])
    try:
        with open(config_file) as f:
            lines = [i for i, line in enumerate(f, 1) if re.match(rf"\s*{name}\s*:", line)]
    except OSError:
        lines = []
    return f"{config_file}:{lines[0]}" if len(lines) == 1 else config_file


def _yaml_place(error: yaml.YAMLError, config_file: str) -> str:
    """ "FILE:LINE:COLUMN" of a YAML error, from its mark where it has one."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return config_file
    return f"{mark.name or config_file}:{mark.line + 1}:{mark.column + 1}"
