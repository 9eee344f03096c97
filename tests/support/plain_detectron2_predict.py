"""
Detectron2's own DefaultPredictor on images, in a process that never imports ltm_d2 (run by
tests/test_plain_retinanet.py as a script):

    python plain_detectron2_predict.py PLAIN_CONFIG OUT.pth IMAGE...

Loads the config with get_cfg() and allow_unsafe=False, and the weights it names (MODEL.WEIGHTS)
into Detectron2's RetinaNet, and writes to OUT.pth the detections of each image, the missing and
unexpected keys of the weights, and the ltm_d2 modules the process imported (none).
"""

import sys

import cv2
import torch

from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor


def main(config_file, out, *images):
    cfg = get_cfg()
    cfg.merge_from_file(config_file, allow_unsafe=False)
    predictor = DefaultPredictor(cfg)
    weights = torch.load(cfg.MODEL.WEIGHTS, map_location="cpu", weights_only=True)["model"]
    keys = predictor.model.load_state_dict(weights, strict=False)
    detections = []
    for path in images:
        instances = predictor(cv2.imread(path))["instances"]
        detections.append((instances.pred_boxes.tensor, instances.scores, instances.pred_classes))
    torch.save(
        {
            "architecture": type(predictor.model).__name__,
            "detections": detections,
            "missing_keys": keys.missing_keys,
            "unexpected_keys": keys.unexpected_keys,
            "ltm_d2_modules": sorted(m for m in sys.modules if m.split(".")[0] == "ltm_d2"),
        },
        out,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
