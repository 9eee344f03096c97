"""Multi-scale and flip testing for dense detectors (paper §4.1, Table 7)."""

from typing import Dict, List

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detectron2.layers import batched_nms
from detectron2.modeling import DatasetMapperTTA
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

__all__ = ["DenseDetectorWithTTA", "merge_detections"]


def merge_detections(instances: Instances, nms_thresh: float, max_detections: int) -> Instances:
    """
    The detections of all augmented versions of one image, merged by one class-wise NMS.

    Args:
        instances: R detections in the original image's coordinates, with fields "pred_boxes"
            (R, 4), "scores" (R,) and "pred_classes" (R,).
        nms_thresh: IoU above which the lower-scored of two boxes of one class is dropped.
        max_detections: at most this many detections are kept, those of highest score.
    Returns:
        the kept detections, highest score first.
    """
    keep = batched_nms(
        instances.pred_boxes.tensor, instances.scores, instances.pred_classes, nms_thresh
    )
    return instances[keep[:max_detections]]


class DenseDetectorWithTTA(nn.Module):
    """
    A dense detector (:class:`LTM`, :class:`LTMAF`, Detectron2's RetinaNet or FCOS) tested on
    several versions of each image: every shorter side of TEST.AUG.MIN_SIZES (longer side at most
    TEST.AUG.MAX_SIZE), each also flipped when TEST.AUG.FLIP. The detections of every version
    (each after the model's own NMS and limit) are mapped back through the inverse transforms to
    the original image, then merged by one class-wise NMS with the model's NMS threshold, keeping
    the model's `max_detections_per_image`. Its :meth:`__call__` has the inference interface of
    the wrapped model; it is the dense-detector counterpart of Detectron2's
    :class:`GeneralizedRCNNWithTTA`.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper=None):
        """
        Args:
            cfg: the config of `model`; its TEST.AUG keys define the versions when `tta_mapper`
                is None.
            model: a :class:`DenseDetector` (possibly wrapped in DistributedDataParallel).
            tta_mapper: takes one input dict, returns the list of its augmented versions, each
                with its "transforms"; defaults to Detectron2's `DatasetMapperTTA(cfg)`.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not isinstance(model, DenseDetector):
            raise TypeError(f"DenseDetectorWithTTA needs a DenseDetector, got {type(model)}")
        self.model = model
        self.tta_mapper = DatasetMapperTTA(cfg) if tta_mapper is None else tta_mapper

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """
        Args:
            batched_inputs: inputs in the format of the wrapped model's inference: dicts with
                "image" (C, H, W) and the original "height" and "width".
        Returns:
            one {"instances": Instances} per input, in its original height and width.
        """
        return [self._inference_one_image(x) for x in batched_inputs]

    def _inference_one_image(self, input: Dict) -> Dict[str, Instances]:
        orig_shape = (input["height"], input["width"])
        augmented_inputs = self.tta_mapper(input)
        transforms = [x.pop("transforms") for x in augmented_inputs]
        detections = []
        for transform, output in zip(transforms, self._detect(augmented_inputs)):
            boxes = output.pred_boxes.tensor
            original_boxes = transform.inverse().apply_box(boxes.cpu().numpy())
            detections.append(
                Instances(
                    orig_shape,
                    pred_boxes=Boxes(torch.as_tensor(original_boxes, device=boxes.device)),
                    scores=output.scores,
                    pred_classes=output.pred_classes,
                )
            )
        merged = merge_detections(
            Instances.cat(detections),
            self.model.test_nms_thresh,
            self.model.max_detections_per_image,
        )
        # Clip to the image and drop empty boxes after the NMS, where the model itself does it.
        return {"instances": detector_postprocess(merged, *orig_shape)}

    def _detect(self, augmented_inputs: List[Dict]) -> List[Instances]:
        """
        The model's detections for each augmented input, in that input's own coordinates.
        Inputs of equal size are batched together, so that no image is ever padded beyond what
        the model pads it to alone (padding would change GroupNorm's statistics).
        """
        by_size: Dict[tuple, List[int]] = {}
        for i, x in enumerate(augmented_inputs):
            by_size.setdefault(tuple(x["image"].shape[-2:]), []).append(i)
        outputs: List[Instances] = [None] * len(augmented_inputs)
        for indices in by_size.values():
            batch = [augmented_inputs[i] for i in indices]
            for i, output in zip(indices, self._forward_inference(batch)):
                outputs[i] = output
        return outputs

    def _forward_inference(self, batched_inputs: List[Dict]) -> List[Instances]:
        """:meth:`DenseDetector.forward` in inference, without rescaling and clipping."""
        images = self.model.preprocess_image(batched_inputs)
        features = self.model.backbone(images.tensor)
        features = [features[f] for f in self.model.head_in_features]
        predictions = self.model.head(features)
        return self.model.forward_inference(images, features, predictions)
