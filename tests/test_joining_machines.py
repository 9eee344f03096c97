"""
Machines joining a run (ltm_d2/engine/launch.py), as two machines on one host: both finish; a
machine that never joins ends the run after the join timeout with a message naming the address
and the missing ranks, without a traceback.
"""

import os
import subprocess
import sys
import time

import pytest
import torch

from detectron2.engine.launch import _find_free_port

from support import REPO


def all_reduce_and_write(out_dir):
    """A run's work: a collective over both machines, then each writes what it got."""
    total = torch.ones(1)
    torch.distributed.all_reduce(total)
    rank = torch.distributed.get_rank()
    with open(os.path.join(out_dir, f"rank{rank}"), "w") as f:
        f.write(str(int(total.item())))


MACHINE = """
import sys
sys.path.insert(0, sys.argv[1])
from ltm_d2.engine.launch import launch
from ltm_d2.errors import run_main
from test_joining_machines import all_reduce_and_write
machine_rank, dist_url, out_dir, join_timeout = sys.argv[2:]
run_main(launch, all_reduce_and_write, 1, 2, int(machine_rank), dist_url, (out_dir,),
         float(join_timeout))
"""


def start_machine(machine_rank, dist_url, out_dir, join_timeout):
    command = [
        sys.executable,
        "-c",
        MACHINE,
        os.path.join(REPO, "tests"),
        str(machine_rank),
        dist_url,
        str(out_dir),
        str(join_timeout),
    ]
    return subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_two_machines_on_one_host_both_finish(tmp_path):
    dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    machines = [start_machine(rank, dist_url, tmp_path, 600) for rank in (0, 1)]
    outputs = [m.communicate(timeout=600) for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["2", "2"]
    assert (
        f"Machine 0 of 2: waiting up to 600 s for 2 machines (2 workers) to join at {dist_url}"
        in outputs[0][0]
    )


@pytest.mark.slow
def test_a_machine_that_never_joins_ends_the_run_after_the_join_timeout(tmp_path):
    dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    start = time.monotonic()
    machine = start_machine(0, dist_url, tmp_path, 3)
    stdout, stderr = machine.communicate(timeout=600)
    assert machine.returncode == 2
    assert time.monotonic() - start < 300  # not Detectron2's 30 minutes
    assert "waiting up to 3 s for 2 machines (2 workers)" in stdout
    assert f"did not join at {dist_url} within 3 s: ranks 1 (machine 1 of 2)" in stderr
    assert "Traceback" not in stderr
