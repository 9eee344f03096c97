"""
Pictures of detections with Detectron2's Visualizer, shared by demo/demo.py and
tools/draw_detections.py: panels (ground truth, one model's detections) laid side by side.
"""

from typing import List

import cv2
import numpy as np

from detectron2.config import CfgNode
from detectron2.data import Metadata
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

from .checkpoint import SafeCheckpointer
from .preflight import check_weights_file
from .tiling.prediction import tiled_predictor

# Small images are drawn enlarged to this longer side, so that labels stay legible.
MIN_DRAWN_SIZE = 512
GAP = 4  # white pixels between panels
TITLE_HEIGHT = 28


def safe_predictor(cfg: CfgNode) -> DefaultPredictor:
    """
    Detectron2's DefaultPredictor of `cfg`, with MODEL.WEIGHTS read by SafeCheckpointer: a file
    that would run code is refused before anything in it runs. With INPUT.TILING.SIZE > 0, images
    larger than a tile are detected tile by tile (:func:`tiled_predictor`).
    """
    weights = cfg.MODEL.WEIGHTS
    check_weights_file(weights)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    predictor = DefaultPredictor(cfg)
    if weights:
        SafeCheckpointer(predictor.model, cfg=cfg).load(weights)
    if cfg.INPUT.TILING.SIZE > 0:
        predictor = tiled_predictor(cfg, predictor)
    return predictor


def confident_detections(
    predictor: DefaultPredictor, bgr: np.ndarray, threshold: float
) -> Instances:
    """The detections of score >= `threshold` of `predictor` on an (H, W, 3) BGR image, on the
    CPU."""
    instances = predictor(bgr)["instances"].to("cpu")
    return instances[instances.scores >= threshold]


def drawing_scale(image: np.ndarray) -> float:
    """The Visualizer scale for an (H, W, 3) image: >= 1, enlarging small images."""
    return max(1.0, MIN_DRAWN_SIZE / max(image.shape[:2]))


def draw_ground_truth(rgb: np.ndarray, record: dict, metadata: Metadata) -> np.ndarray:
    """(H', W', 3) RGB picture of a dataset record's annotations on its (H, W, 3) RGB image."""
    return Visualizer(rgb, metadata, scale=drawing_scale(rgb)).draw_dataset_dict(record).get_image()


def draw_detections(rgb: np.ndarray, instances: Instances, metadata: Metadata) -> np.ndarray:
    """(H', W', 3) RGB picture of `instances` (on the CPU) on an (H, W, 3) RGB image."""
    visualizer = Visualizer(rgb, metadata, scale=drawing_scale(rgb))
    return visualizer.draw_instance_predictions(instances).get_image()


def with_title(panel: np.ndarray, title: str) -> np.ndarray:
    """The (H, W, 3) RGB `panel` under a white strip that carries `title`."""
    strip = np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(
        strip,
        title,
        (6, TITLE_HEIGHT - 9),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return np.vstack([strip, panel])


def side_by_side(panels: List[np.ndarray]) -> np.ndarray:
    """RGB panels of equal height, left to right, separated by white gaps."""
    gap = np.full((panels[0].shape[0], GAP, 3), 255, dtype=np.uint8)
    pieces = [piece for panel in panels for piece in (gap, panel)][1:]
    return np.hstack(pieces)


def write_rgb(path: str, rgb: np.ndarray) -> None:
    """Write an RGB picture (OpenCV writes BGR)."""
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"{path}: could not write the picture")
