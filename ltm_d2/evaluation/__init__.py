from .nms_recall import NMSRecallEvaluator, WithCandidatesBeforeNMS, nms_recall, nms_skipped
from .pascal_voc import VOCEvaluator
