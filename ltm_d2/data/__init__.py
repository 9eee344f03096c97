from .shapes import CLASSES, SPLITS, ensure_split, register_shapes
from .validation import DatasetError, register_checked_coco, validate_coco_json

register_shapes()
