"""Evaluators run by `Trainer.test`: NMS recall (paper Table 4) and Pascal VOC mAP of any
dataset."""

from .nms_recall import NMSRecallEvaluator, WithCandidatesBeforeNMS, nms_recall, nms_skipped
from .pascal_voc import VOCEvaluator
from .unreadable_images import SkippingCOCOEvaluator, SkippingUnreadableImages
