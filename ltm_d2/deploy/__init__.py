"""Running an ltm_d2 model outside the project: a plain RetinaNet config, exports, model
analysis."""

from .retinanet_config import (
    NoPlainRetinaNetError,
    class_names,
    plain_retinanet_config,
    plain_retinanet_yaml,
)

__all__ = [
    "NoPlainRetinaNetError",
    "class_names",
    "plain_retinanet_config",
    "plain_retinanet_yaml",
]
