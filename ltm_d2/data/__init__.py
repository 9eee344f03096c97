from .shapes import CLASSES, SPLITS, ensure_split, register_shapes

register_shapes()
