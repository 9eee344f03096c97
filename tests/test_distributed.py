"""Two CPU workers with one image each give the gradient of one process with both images."""
import os

import torch

from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from conftest import build_tiny_model, make_input, random_boxes

SIZE = (64, 64)


def inputs():
    # Different object counts per image, so that a per-worker normaliser would give a different
    # gradient than the all-reduced one.
    return [
        make_input(random_boxes(1, SIZE, 0), [2], SIZE, seed=0),
        make_input(random_boxes(6, SIZE, 1), [0, 1, 2, 3, 4, 5], SIZE, seed=1),
    ]


def gradients(mode, batched_inputs):
    from ltm_d2.engine import create_ddp_model

    model = create_ddp_model(build_tiny_model("MODEL.LTM.MATCHING", mode))
    with EventStorage(0):
        sum(model(batched_inputs).values()).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def worker(mode, out_dir):
    torch.set_num_threads(1)
    rank = comm.get_rank()
    grads = gradients(mode, [inputs()[rank]])
    if rank == 0:
        torch.save({k.removeprefix("module."): v for k, v in grads.items()}, os.path.join(out_dir, "ddp.pth"))


def check_mode(mode, tmp_path):
    launch(worker, 2, dist_url="auto", args=(mode, str(tmp_path)))
    distributed = torch.load(tmp_path / "ddp.pth")
    single = gradients(mode, inputs())
    assert distributed.keys() == single.keys()
    for k in single:
        torch.testing.assert_close(distributed[k], single[k], rtol=1e-4, atol=1e-6, msg=k)


def test_ltm_gradient_is_independent_of_the_number_of_workers(tmp_path):
    check_mode("ltm", tmp_path)


def test_freeanchor_gradient_is_independent_of_the_number_of_workers(tmp_path):
    check_mode("freeanchor", tmp_path)
