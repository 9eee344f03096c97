"""ltm_d2: Learning to Match Anchors for Visual Object Detection, as a Detectron2 project."""

from . import data  # registers the bundled dataset
from .config import add_ltm_config, load_config
from .modeling import LTM, LTMAF

__all__ = ["add_ltm_config", "load_config", "LTM", "LTMAF"]
