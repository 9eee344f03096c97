import os

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from ltm_d2 import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "Shapes-Detection", "ltm_R_18_FPN_tiny.yaml")

# The devices of tests whose result may depend on the device: the CPU always, CUDA where there is
# a GPU (marked "cuda", so that `pytest -m cuda` runs only those: tools/gpu_check.py).
CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
    ],
)
DEVICES = ["cpu", CUDA]


@pytest.fixture(params=DEVICES)
def device(request):
    """Each device of DEVICES in turn."""
    return request.param


def tiny_cfg(*opts, device="cpu"):
    """The tiny shapes config on `device` (the CPU by default), with KEY VALUE overrides."""
    return load_config(TINY_CONFIG, ["MODEL.DEVICE", device, *opts])


def build_tiny_model(*opts, seed=0, device="cpu"):
    """The tiny model on `device`, in training mode; its weights depend on `seed` only."""
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(*opts)).to(device)
    model.train()
    return model


def make_input(boxes, classes, size=(64, 64), seed=0):
    """One batched input: a random image of `size` (H, W) with the given XYXY boxes and classes."""
    g = torch.Generator().manual_seed(seed)
    instances = Instances(size)
    instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64).reshape(-1)
    image = torch.randint(0, 256, (3, *size), generator=g).float()
    return {"image": image, "instances": instances, "height": size[0], "width": size[1]}


def random_boxes(n, size, seed, min_size=4.0):
    """n random XYXY boxes with float coordinates inside an image of `size` (H, W)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    wh = min_size + torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) / 2)
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - wh)
    return torch.cat([xy, xy + wh], dim=1)


@pytest.fixture
def storage():
    from detectron2.utils.events import EventStorage

    with EventStorage(0) as s:
        yield s
