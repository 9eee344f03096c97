"""
NMS recall (paper §4.2, Table 4): how many of the objects that the candidates before NMS
localise at IoU > tau are still localised after NMS.

For each ground-truth box, take its best IoU with any detection, class-agnostic, after NMS and
with the same candidates before NMS (same score threshold and top-k, NMS skipped). Over the
dataset, NR_tau = #objects with best IoU > tau after NMS / #objects with best IoU > tau before,
tau in {0.50, 0.55, ..., 0.90}; NR is the mean over tau. Images without objects are skipped.
"""

import contextlib
import itertools
import json
import logging
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

NMS_RECALL_THRESHOLDS = np.round(np.arange(0.50, 0.90 + 1e-9, 0.05), 2)


def best_iou_per_object(gt_boxes: Boxes, detections: Boxes) -> Tensor:
    """(G,) the largest IoU of each ground-truth box with any of the detections (0 if none)."""
    if len(detections) == 0:
        return torch.zeros(len(gt_boxes))
    return pairwise_iou(gt_boxes, detections).max(dim=1).values


def nms_recall(best_after: Tensor, best_before: Tensor) -> Dict[str, float]:
    """
    NR_tau and NR (Table 4), in percent.

    Args:
        best_after, best_before: (G,) each object's best IoU with the detections after NMS and
            with the candidates before NMS, over all objects of the dataset.
    Returns:
        {"NR": ..., "NR50": ..., "NR55": ..., ..., "NR90": ...}; NR_tau is NaN when no candidate
        reaches IoU > tau (and NR then too).
    """
    thresholds = torch.as_tensor(NMS_RECALL_THRESHOLDS, dtype=best_before.dtype)
    found_after = (best_after[None] > thresholds[:, None]).sum(dim=1).double()  # (T,)
    found_before = (best_before[None] > thresholds[:, None]).sum(dim=1).double()
    ratio = 100.0 * found_after / found_before  # NaN where 0 / 0
    results = {"NR": ratio.mean().item()}
    for tau, value in zip(NMS_RECALL_THRESHOLDS, ratio.tolist()):
        results[f"NR{round(tau * 100)}"] = value
    return results


@contextlib.contextmanager
def nms_skipped(detector: nn.Module):
    """
    Within this context, a dense detector (RetinaNet, LTM, LTMAF, FCOS) returns all its candidates:
    the same score threshold and per-level top-k, but no NMS (an IoU threshold of 1 suppresses
    nothing) and no cap on the number of detections per image.
    """
    if not hasattr(detector, "test_nms_thresh"):
        raise TypeError(
            f"NMS recall needs a dense detector with `test_nms_thresh` (RetinaNet, LTM, LTMAF); "
            f"got {type(detector).__name__}"
        )
    saved = detector.test_nms_thresh, detector.max_detections_per_image
    detector.test_nms_thresh, detector.max_detections_per_image = 1.0, sys.maxsize
    try:
        yield detector
    finally:
        detector.test_nms_thresh, detector.max_detections_per_image = saved


class WithCandidatesBeforeNMS(nn.Module):
    """
    Runs a dense detector twice on each batch, normally and within :func:`nms_skipped`, and returns
    the normal outputs with one more key per image, "candidates": the Instances before NMS.
    Evaluators that read only "instances" (COCOEvaluator) see the detector's usual outputs.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # The detector itself, when `model` is wrapped in DistributedDataParallel.
        self.detector = getattr(model, "module", model)

    def forward(self, batched_inputs: List[dict]) -> List[dict]:
        outputs = self.model(batched_inputs)
        with nms_skipped(self.detector):
            candidates = self.model(batched_inputs)
        for output, candidate in zip(outputs, candidates):
            output["candidates"] = candidate["instances"]
        return outputs


class NMSRecallEvaluator(DatasetEvaluator):
    """
    NR and NR_tau of a dataset. The outputs it processes must hold "instances" (after NMS) and
    "candidates" (before NMS), as :class:`WithCandidatesBeforeNMS` gives them. The ground truth
    (crowd regions left out) comes from the dataset's records. Like COCOEvaluator, each worker
    processes its share of the images, and the main process gathers them and computes NR; with
    `output_dir`, it also writes them to `output_dir/nms_recall.json`.
    """

    def __init__(
        self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None
    ):
        self._distributed = distributed
        self._output_dir = output_dir
        self._gt_boxes = {
            record["image_id"]: Boxes(
                torch.tensor(
                    [
                        BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                        for a in record.get("annotations", [])
                        if not a.get("iscrowd", 0)
                    ],
                    dtype=torch.float32,
                ).reshape(-1, 4)
            )
            for record in DatasetCatalog.get(dataset_name)
        }
        self.reset()

    def reset(self):
        self._best_after: List[Tensor] = []
        self._best_before: List[Tensor] = []

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            if not output:
                continue  # an image skipped as unreadable
            if "candidates" not in output:
                raise KeyError(
                    "NMSRecallEvaluator needs the candidates before NMS: evaluate "
                    "WithCandidatesBeforeNMS(model) (TEST.NMS_RECALL True in train_net.py)"
                )
            gt_boxes = self._gt_boxes[input["image_id"]]
            if len(gt_boxes) == 0:
                continue
            after = output["instances"].pred_boxes.to("cpu")
            before = output["candidates"].pred_boxes.to("cpu")
            self._best_after.append(best_iou_per_object(gt_boxes, after))
            self._best_before.append(best_iou_per_object(gt_boxes, before))

    def evaluate(self):
        best_after, best_before = self._best_after, self._best_before
        if self._distributed:
            comm.synchronize()
            best_after = list(itertools.chain(*comm.gather(best_after, dst=0)))
            best_before = list(itertools.chain(*comm.gather(best_before, dst=0)))
            if not comm.is_main_process():
                return {}
        if not best_before:
            logger.warning("NMSRecallEvaluator: no image with objects was processed.")
            return {}
        results = nms_recall(torch.cat(best_after), torch.cat(best_before))
        logger.info("NMS recall (%): " + ", ".join(f"{k} {v:.1f}" for k, v in results.items()))
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(os.path.join(self._output_dir, "nms_recall.json"), "w") as f:
                json.dump(results, f, indent=1)
        return OrderedDict(nms_recall=results)
