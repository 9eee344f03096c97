"""
Detection on images larger than the network input, tile by tile (INPUT.TILING.*): the test
mapper that leaves images at their original resolution, the detector that cuts them into tiles
and merges the tiles' detections, and Detectron2's predictor made to do the same.
"""

from typing import Dict, List

import torch
from torch import nn

from detectron2.data import transforms as T
from detectron2.data.detection_utils import build_augmentation
from detectron2.engine import DefaultPredictor
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from ..data.mapper import MarkingTestDatasetMapper
from ..data.model_input import model_input
from ..modeling.test_time_augmentation import merge_detections
from .cutting import tile_windows

__all__ = ["tiled_test_mapper", "build_test_mapper", "TiledDetector", "tiled_predictor"]


def tiled_test_mapper(cfg) -> MarkingTestDatasetMapper:
    """
    The test mapper without its resize (ResizeShortestEdge): with tiling, the model gets every
    image at its original resolution, and TiledDetector resizes each tile (and each image not
    larger than a tile, whole) as this mapper would otherwise resize the image.
    """
    return MarkingTestDatasetMapper(cfg, augmentations=[])


def build_test_mapper(cfg) -> MarkingTestDatasetMapper:
    """The test loader's mapper: :func:`tiled_test_mapper` with tiling; without, the test mapper
    that resizes the image as Detectron2's does."""
    return tiled_test_mapper(cfg) if cfg.INPUT.TILING.SIZE > 0 else MarkingTestDatasetMapper(cfg)


class TiledDetector(nn.Module):
    """
    A detector (any model with Detectron2's inference interface) applied to each image larger
    than INPUT.TILING.SIZE in overlapping tiles of that side (:func:`tile_windows`, with
    INPUT.TILING.OVERLAP): the detections of every tile are shifted to the image and merged by
    one class-wise NMS (MODEL.RETINANET.NMS_THRESH_TEST), keeping TEST.DETECTIONS_PER_IMAGE of
    highest score. An image not larger than a tile goes through the model whole, as without
    tiling. Its :meth:`__call__` has the inference interface of the wrapped model.

    The input images must be at their original resolution, which Detectron2's test mapper does
    not give (it resizes with ResizeShortestEdge): with tiling, Trainer.build_test_loader uses
    :func:`tiled_test_mapper` and the demo :func:`tiled_predictor`, which do not resize. This
    wrapper then resizes each tile (or the whole small image) with the test resize
    (MIN_SIZE_TEST, MAX_SIZE_TEST) and gives it to the model with the tile's own height and width,
    so that the model's `detector_postprocess` returns its detections in tile pixels; a small
    image thus reaches the model exactly as through the usual test mapper.

    Built on Detectron2 rather than SAHI, which loads models through Detectron2's plain
    `get_cfg`: that config refuses this project's MODEL.LTM keys.
    """

    def __init__(self, cfg, model: nn.Module, resize: bool = True, tiles_per_batch: int = 4):
        """
        Args:
            cfg: the model's config, with INPUT.TILING.SIZE > 0.
            model: the detector, e.g. a :class:`DenseDetector` (possibly in DDP), or a
                :class:`DenseDetectorWithTTA`.
            resize: resize each tile with the test resize; False for a model that resizes its
                inputs itself (DenseDetectorWithTTA).
            tiles_per_batch: tiles given to the model at once (all tiles of an image have one
                size, so none is padded beyond what the model pads it to alone).
        """
        super().__init__()
        if cfg.INPUT.TILING.SIZE <= 0:
            raise ValueError("TiledDetector needs INPUT.TILING.SIZE > 0")
        self.model = model
        self.size = cfg.INPUT.TILING.SIZE
        self.overlap = cfg.INPUT.TILING.OVERLAP
        self.resize = build_augmentation(cfg, is_train=False) if resize else []
        self.nms_thresh = cfg.MODEL.RETINANET.NMS_THRESH_TEST
        self.max_detections = cfg.TEST.DETECTIONS_PER_IMAGE
        self.tiles_per_batch = tiles_per_batch

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """
        Args:
            batched_inputs: dicts with "image" (C, H, W) at the original resolution and the
                original "height" and "width".
        Returns:
            one {"instances": Instances} per input, in its original height and width.
        """
        return [self._inference_one_image(x) for x in batched_inputs]

    def _model_input(self, image: torch.Tensor, height: int, width: int) -> Dict:
        """The model's input for a (C, h, w) image or tile: resized, of original size h, w."""
        return model_input(image.permute(1, 2, 0).cpu().numpy(), height, width, self.resize)

    def _inference_one_image(self, input: Dict) -> Dict[str, Instances]:
        image = input["image"]  # (C, H, W)
        shape = tuple(image.shape[-2:])
        windows = tile_windows(*shape, self.size, self.overlap)  # (T, 4)
        if len(windows) == 1:
            (output,) = self.model([self._model_input(image, input["height"], input["width"])])
            return output
        detections = []  # T Instances, in tile pixels
        for start in range(0, len(windows), self.tiles_per_batch):
            # Resized tiles are made batch by batch: all of a big image's would take gigabytes.
            tiles = [
                self._model_input(image[:, y1:y2, x1:x2], y2 - y1, x2 - x1)
                for x1, y1, x2, y2 in windows[start : start + self.tiles_per_batch]
            ]
            detections.extend(output["instances"] for output in self.model(tiles))
        boxes = torch.cat([d.pred_boxes.tensor for d in detections])  # (R, 4)
        counts = torch.tensor([len(d) for d in detections])  # (T,)
        offsets = torch.as_tensor(windows[:, :2], dtype=boxes.dtype).repeat(1, 2)  # (T, 4)
        merged = merge_detections(
            Instances(
                shape,
                pred_boxes=Boxes(boxes + offsets.repeat_interleave(counts, dim=0).to(boxes.device)),
                scores=torch.cat([d.scores for d in detections]),
                pred_classes=torch.cat([d.pred_classes for d in detections]),
            ),
            self.nms_thresh,
            self.max_detections,
        )
        # Rescaled to the original size, should the image differ from it, and clipped.
        return {"instances": detector_postprocess(merged, input["height"], input["width"])}


class _Unchanged(T.Augmentation):
    """An augmentation that leaves the image as it is."""

    def get_transform(self, image):
        return T.NoOpTransform()


def tiled_predictor(cfg, predictor: DefaultPredictor) -> DefaultPredictor:
    """
    Detectron2's `predictor` made to detect in tiles: its model wrapped in :class:`TiledDetector`
    and its own resize of the whole image turned off (the wrapper resizes each tile). As the
    predictor gives the model float pixels, an image not larger than a tile is resized from
    them, which may differ in the last digits from the predictor's own resize of uint8 pixels.
    """
    predictor.model = TiledDetector(cfg, predictor.model)
    predictor.aug = _Unchanged()
    return predictor
