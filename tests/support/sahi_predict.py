"""
SAHI's Detectron2 adapter on images, in a process that never imports ltm_d2 (run by
tests/test_plain_retinanet.py as a script):

    python sahi_predict.py PLAIN_CONFIG OUT.pth SLICE IMAGE...

Runs the class-name line of the plain config's header, as a user copies it, then loads the config
and the weights it names through `AutoDetectionModel` (model_type "detectron2"), and writes to
OUT.pth, per image, SAHI's full-image prediction (`get_prediction`) and its sliced prediction
(`get_sliced_prediction`, SLICE x SLICE slices), each as boxes, scores, class ids and class names;
and the ltm_d2 modules the process imported (none).
"""

import sys

import cv2
import torch
from sahi import AutoDetectionModel
from sahi.predict import get_prediction, get_sliced_prediction

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog  # noqa: F401 (the header's line names it)


def as_tensors(result):
    predictions = result.object_prediction_list
    return {
        "boxes": torch.tensor([p.bbox.to_xyxy() for p in predictions]).reshape(-1, 4),
        "scores": torch.tensor([p.score.value for p in predictions]),
        "classes": torch.tensor([p.category.id for p in predictions], dtype=torch.int64),
        "names": [p.category.name for p in predictions],
    }


def main(config_file, out, slice_size, *images):
    with open(config_file) as f:
        lines = [line[1:].strip() for line in f if line.startswith("#   MetadataCatalog.get(")]
    exec(lines[0])
    cfg = get_cfg()
    cfg.merge_from_file(config_file, allow_unsafe=False)
    model = AutoDetectionModel.from_pretrained(
        model_type="detectron2",
        model_path=cfg.MODEL.WEIGHTS,
        config_path=config_file,
        confidence_threshold=cfg.MODEL.RETINANET.SCORE_THRESH_TEST,
        device="cpu",
    )
    full, sliced = [], []
    for path in images:
        rgb = cv2.imread(path)[:, :, ::-1].copy()
        full.append(as_tensors(get_prediction(rgb, model)))
        size = int(slice_size)
        sliced.append(
            as_tensors(
                get_sliced_prediction(rgb, model, slice_height=size, slice_width=size, verbose=0)
            )
        )
    torch.save(
        {
            "full": full,
            "sliced": sliced,
            "ltm_d2_modules": sorted(m for m in sys.modules if m.split(".")[0] == "ltm_d2"),
        },
        out,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
