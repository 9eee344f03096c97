"""Evaluators run by `Trainer.test`: NMS recall (paper Table 4), Pascal VOC mAP of any dataset,
and the figures of crowded datasets (precision, recall, F1, count error at fixed thresholds)."""

from .build import build_evaluator
from .dense_objects import DenseObjectEvaluator
from .nms_recall import NMSRecallEvaluator, WithCandidatesBeforeNMS, nms_recall, nms_skipped
from .pascal_voc import VOCEvaluator
from .unreadable_images import SkippingCOCOEvaluator, SkippingUnreadableImages
