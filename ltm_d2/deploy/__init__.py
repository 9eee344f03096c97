"""Running an ltm_d2 model outside the project: a plain RetinaNet config, exports, model
analysis."""

from .retinanet_config import NoPlainRetinaNetError, plain_retinanet_config, plain_retinanet_yaml

__all__ = ["NoPlainRetinaNetError", "plain_retinanet_config", "plain_retinanet_yaml"]
