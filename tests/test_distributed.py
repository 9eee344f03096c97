"""
CPU workers (gloo) training together: the gradient of W workers equals that of one process on the
union of their batches (the all-reduced normalisation), with 2 and 3 workers and with a worker
whose images have no objects; an exception in one worker ends the run with its traceback.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from support import REPO, build_tiny_model, make_input, random_boxes
from support.distributed import assert_close_per_parameter

SIZE = (64, 64)


def image(num_objects, seed):
    return make_input(
        random_boxes(num_objects, SIZE, seed), torch.arange(num_objects) % 6, SIZE, seed=seed
    )


# The images of each worker. Different object counts per worker, so that a per-worker
# normaliser would give a different gradient than the all-reduced one.
LAYOUTS = {
    "2 workers": lambda: [[image(1, 0)], [image(6, 1)]],
    "2 workers, one without objects": lambda: [[image(3, 0)], [image(0, 1)]],
    "3 workers, one without objects": lambda: [
        [image(1, 0), image(4, 3)],
        [image(0, 1), image(0, 4)],
        [image(6, 2), image(2, 5)],
    ],
}


def gradients(mode, batched_inputs):
    from ltm_d2.engine import create_ddp_model

    model = create_ddp_model(build_tiny_model("MODEL.LTM.MATCHING", mode))
    with EventStorage(0):
        sum(model(batched_inputs).values()).backward()
    return {
        k.removeprefix("module."): p.grad.clone()
        for k, p in model.named_parameters()
        if p.grad is not None
    }


def worker(mode, layout, out_dir):
    torch.set_num_threads(1)
    grads = gradients(mode, LAYOUTS[layout]()[comm.get_rank()])
    if comm.is_main_process():
        torch.save(grads, os.path.join(out_dir, "ddp.pth"))


def check(mode, layout, tmp_path):
    batches = LAYOUTS[layout]()
    launch(worker, len(batches), dist_url="auto", args=(mode, layout, str(tmp_path)))
    distributed = torch.load(tmp_path / "ddp.pth", weights_only=True)
    single = gradients(mode, [x for batch in batches for x in batch])
    assert_close_per_parameter(distributed, single)


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_ltm_gradient_is_independent_of_the_number_of_workers(tmp_path, layout):
    check("ltm", layout, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["2 workers", "3 workers, one without objects"])
def test_freeanchor_gradient_is_independent_of_the_number_of_workers(tmp_path, layout):
    check("freeanchor", layout, tmp_path)


def fail_in_worker_1():
    """Worker 1 raises while worker 0 waits for it in a collective, as in a training step."""
    if comm.get_rank() == 1:
        raise ValueError("worker 1 found something wrong")
    torch.distributed.all_reduce(torch.ones(1))


FAILING_RUN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from detectron2.engine import launch
    from test_distributed import fail_in_worker_1
    launch(fail_in_worker_1, 2, dist_url="auto")
    """
)


@pytest.mark.slow
def test_an_exception_in_one_worker_ends_the_run_with_its_traceback():
    result = subprocess.run(
        [sys.executable, "-c", FAILING_RUN, os.path.join(REPO, "tests")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "ValueError: worker 1 found something wrong" in result.stderr
    assert (
        'in fail_in_worker_1\n    raise ValueError("worker 1 found something wrong")'
        in result.stderr
    )
