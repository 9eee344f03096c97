"""
Helpers shared by the tests: the tiny config and model, hand-made inputs, running the project's
scripts. Test modules import from here (and from the modules of this package), never from each
other.
"""

import functools
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.env import seed_all_rng

from ltm_d2 import load_config
from ltm_d2.config import add_ltm_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, "configs", "Shapes-Detection", "ltm_R_18_FPN_tiny.yaml")

# The config overrides of each loss: the three matchings of LTM's MODEL.LTM.MATCHING, and LTM-AF.
VARIANTS = {
    "ltm": ("MODEL.LTM.MATCHING", "ltm"),
    "freeanchor": ("MODEL.LTM.MATCHING", "freeanchor"),
    "topk": ("MODEL.LTM.MATCHING", "topk"),
    "ltm_af": ("MODEL.META_ARCHITECTURE", "LTMAF", "MODEL.LTM.BBOX_REG_WEIGHT", 5.5),
}
MATCHING_MODES = ["ltm", "freeanchor", "ltm_af"]  # the losses that match (topk does not)

# The devices of tests whose result may depend on the device: the CPU always, CUDA where there is
# a GPU (marked "cuda", so that `pytest -m cuda` runs only those: tools/gpu_check.py).
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    ],
)


def tiny_cfg(*opts, device="cpu"):
    """The tiny shapes config on `device` (the CPU by default), with KEY VALUE overrides."""
    return load_config(TINY_CONFIG, ["MODEL.DEVICE", device, *opts])


def build_tiny_model(*opts, seed=0, device="cpu"):
    """The tiny model on `device`, in training mode; its weights depend on `seed` only."""
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(*opts)).to(device)
    model.train()
    return model


def seeded_trainer(cfg):
    """The Trainer of `cfg`, built as train_net.py builds it: after seeding every random generator
    with cfg.SEED (Detectron2's default_setup), so that the run is the same at every test."""
    from ltm_d2.engine import Trainer

    assert cfg.SEED >= 0, "a test trains with a fixed seed: set SEED"
    seed_all_rng(cfg.SEED)
    return Trainer(cfg)


def make_input(boxes, classes, size=(64, 64), seed=0):
    """One batched input: a random image of `size` (H, W) with the given XYXY boxes and classes."""
    g = torch.Generator().manual_seed(seed)
    instances = Instances(size)
    instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64).reshape(-1)
    image = torch.randint(0, 256, (3, *size), generator=g).float()
    return {"image": image, "instances": instances, "height": size[0], "width": size[1]}


def record_of(boxes_xyxy, size, mode=BoxMode.XYXY_ABS, file_name="image.png"):
    """A dataset record of an image of `size` (H, W) with class-0 boxes, given in `mode`."""
    boxes = BoxMode.convert(np.asarray(boxes_xyxy, dtype=np.float64), BoxMode.XYXY_ABS, mode)
    annotations = [
        {"bbox": box.tolist(), "bbox_mode": mode, "category_id": 0, "iscrowd": 0} for box in boxes
    ]
    return {
        "file_name": file_name,
        "image_id": 7,
        "height": size[0],
        "width": size[1],
        "annotations": annotations,
    }


def random_boxes(n, size, seed, min_size=4.0):
    """n random XYXY boxes with float coordinates inside an image of `size` (H, W)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    wh = min_size + torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) / 2)
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - wh)
    return torch.cat([xy, xy + wh], dim=1)


def detecting_model(meta_arch="LTM", *opts, device="cpu"):
    """A tiny model, moved off its initialisation so that it detects many boxes."""
    model = build_tiny_model("MODEL.META_ARCHITECTURE", meta_arch, *opts, seed=3, device=device)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.head.cls_score.bias.fill_(-1.0)
    return model.eval()


class GroundTruthModel(torch.nn.Module):
    """Detects exactly the objects of each image's record, with score 1."""

    def __init__(self, records):
        super().__init__()
        self.records = {r["file_name"]: r for r in records}

    def forward(self, inputs):
        outputs = []
        for x in inputs:
            record = self.records[x["file_name"]]
            boxes = [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                for a in record["annotations"]
            ]
            instances = Instances((record["height"], record["width"]))
            instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
            instances.scores = torch.ones(len(boxes))
            instances.pred_classes = torch.tensor(
                [a["category_id"] for a in record["annotations"]], dtype=torch.int64
            )
            outputs.append({"instances": instances})
        return outputs


@functools.lru_cache(maxsize=None)
def train_net_arguments():
    return load_tool("train_net.py").argument_parser()


def seed_of_run(config, args):
    """The SEED of `train_net.py --config-file config *args` (-1: a new one at each run)."""
    opts = train_net_arguments().parse_args(args).opts
    cfg = get_cfg()  # the config alone: load_config would also register the datasets it names
    add_ltm_config(cfg)
    cfg.merge_from_file(config, allow_unsafe=False)
    cfg.merge_from_list(opts)
    return cfg.SEED


def run(*args, script="train_net.py", config=TINY_CONFIG, expect_success=True, timeout=600):
    """Run `script` with the config and arguments; every successful train_net.py run of a test
    has a fixed seed, so that what it trains, and detects, is the same at every run."""
    if script == "train_net.py" and expect_success:
        assert seed_of_run(config, args) >= 0, f"{config} {args}: set SEED (a test trains seeded)"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, script), "--config-file", config, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert (result.returncode == 0) == expect_success, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def load_tool(path):
    """The module of the script at `path` (relative to the repository), to call its main() here."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
