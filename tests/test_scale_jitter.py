"""Scale-jitter training from config: INPUT.MIN_SIZE_TRAIN lists the shorter sides to choose
from."""

import os

import numpy as np
import pytest

from detectron2.data import detection_utils
from detectron2.data.transforms import AugInput, AugmentationList

from ltm_d2 import load_config

from support import REPO, run

MS_CONFIG = os.path.join(REPO, "configs", "Shapes-Detection", "ltm_R_18_FPN_demo_ms.yaml")
JITTER = (104, 112, 120, 128)


def test_training_augmentation_draws_every_listed_shorter_side():
    cfg = load_config(MS_CONFIG)
    augmentation = AugmentationList(detection_utils.build_augmentation(cfg, is_train=True))
    np.random.seed(0)
    sides = set()
    for _ in range(40):
        image = AugInput(np.zeros((128, 128, 3), dtype=np.uint8))
        augmentation(image)
        sides.add(min(image.image.shape[:2]))
    assert sides == set(JITTER)


@pytest.mark.slow
def test_scale_jitter_config_trains_with_train_net(tmp_path):
    out = str(tmp_path / "ms")
    log = run(
        "OUTPUT_DIR",
        out,
        "DATASETS.TRAIN",
        "('ltm_shapes_mini_train',)",
        "DATASETS.TEST",
        "()",
        "SOLVER.MAX_ITER",
        "2",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SEED",
        "1",
        config=MS_CONFIG,
    )
    assert (
        f"ResizeShortestEdge(short_edge_length={JITTER}, max_size=128, sample_style='choice')"
        in log
    )
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
