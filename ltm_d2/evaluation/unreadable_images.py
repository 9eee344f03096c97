"""
Evaluation that leaves out the test images it cannot read instead of ending with a traceback
(after hours of training): the test mapper marks them (data/mapper.py
:class:`MarkingTestDatasetMapper`), :class:`SkippingUnreadableImages` gives them no output, and
the evaluators leave them out of the AP (their objects are neither found nor missed).
"""

import itertools
import logging
from typing import Dict, List

import torch

from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ..data.mapper import UNREADABLE

logger = logging.getLogger(__name__)


class SkippingUnreadableImages(torch.nn.Module):
    """
    `model` on the images the test mapper could read; an image it could not read gets an empty
    output (no "instances"), on which the evaluators leave it out, and a warning naming it.
    `skipped` maps each skipped image's file name to why.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.skipped: Dict[str, str] = {}

    def forward(self, inputs: List[dict]) -> List[dict]:
        readable = [x for x in inputs if UNREADABLE not in x]
        outputs = iter(self.model(readable) if readable else [])
        for x in inputs:
            if UNREADABLE in x and x["file_name"] not in self.skipped:
                self.skipped[x["file_name"]] = x[UNREADABLE]
                logger.warning(
                    f"Skipping test image {x['file_name']} (image id {x['image_id']}), left out of "
                    f"the evaluation: {x[UNREADABLE]}"
                )
        return [{} if UNREADABLE in x else next(outputs) for x in inputs]


def skipped_image_ids(skipped: List) -> set:
    """The ids of the images all workers skipped (`skipped`: this worker's), on the main
    process."""
    if comm.get_world_size() > 1:
        comm.synchronize()
        skipped = list(itertools.chain(*comm.gather(skipped, dst=0)))
    return set(skipped)


class SkippingCOCOEvaluator(COCOEvaluator):
    """Detectron2's COCOEvaluator, whose AP leaves out the images given no output (skipped as
    unreadable), as it leaves out images never seen: COCO's own evaluation counts their objects
    as missed otherwise."""

    def reset(self):
        super().reset()
        self._skipped: List[int] = []

    def process(self, inputs, outputs):
        for x, output in zip(inputs, outputs):
            if "instances" not in output:
                self._skipped.append(x["image_id"])
        super().process(inputs, outputs)

    def evaluate(self, img_ids=None):
        skipped = skipped_image_ids(self._skipped)
        if skipped and img_ids is None:
            img_ids = [i for i in self._coco_api.getImgIds() if i not in skipped]
        return super().evaluate(img_ids)
