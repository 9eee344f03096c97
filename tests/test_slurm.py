"""
train_net.py --slurm-* (ltm_d2/engine/slurm.py): a SLURM task finds its rank and the job's first
node in the SLURM environment; two tasks of submitit's local stand-in for SLURM train the weights
of one process on their union batch; the mistakes of a submission end with a message.
"""

import os
import pickle
import sys

import pytest
import torch

from detectron2.engine.launch import _find_free_port

from ltm_d2 import load_config
from ltm_d2.engine.slurm import (
    FIRST_PORT,
    NUM_PORTS,
    SlurmTraining,
    slurm_requested,
    submit,
    worker_layout,
)
from ltm_d2.errors import UserError

from support import REPO, TINY_CONFIG, load_tool, run, seeded_trainer, train_net_arguments
from support.distributed import assert_close_per_parameter

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")  # submitit's pickler

# Task 6 of a job of 2 nodes x 4 tasks, as SLURM describes it to the task.
SLURM_TASK = {
    "SUBMITIT_EXECUTOR": "slurm",
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "8",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODEID": "1",
    "SLURM_PROCID": "6",
    "SLURM_LOCALID": "2",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
}

# One iteration of 2 images of 64 px, without the random flip (each worker draws its own) and
# without evaluation.
ONE_STEP = (
    "SOLVER.MAX_ITER",
    "1",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "64",
    "INPUT.RANDOM_FLIP",
    "none",
    "DATASETS.TEST",
    "()",
)


def arguments(*flags, output_dir="output"):
    return train_net_arguments().parse_args(
        ["--config-file", TINY_CONFIG, *flags, "OUTPUT_DIR", str(output_dir), *ONE_STEP]
    )


def test_a_slurm_task_takes_its_rank_and_the_first_node_from_the_slurm_environment(monkeypatch):
    for name, value in SLURM_TASK.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_PORT", "29511")
    (world_size, per_node, nodes, node), local_rank, dist_url = worker_layout(
        submitit.JobEnvironment()
    )
    assert (world_size, per_node, nodes, node, local_rank) == (8, 4, 2, 1, 2)
    assert node * per_node + local_rank == int(SLURM_TASK["SLURM_PROCID"])
    assert dist_url == "tcp://gpu07:29511"


def test_without_master_port_every_task_of_a_job_takes_the_port_of_its_job_id(monkeypatch):
    for name, value in SLURM_TASK.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    ports = set()
    for local_rank in "0123":
        monkeypatch.setenv("SLURM_LOCALID", local_rank)
        ports.add(worker_layout(submitit.JobEnvironment())[2].rsplit(":", 1)[1])
    (port,) = ports
    assert FIRST_PORT <= int(port) < FIRST_PORT + NUM_PORTS


@pytest.mark.slow
def test_two_local_tasks_train_the_weights_of_one_process_on_their_union_batch(
    tmp_path, monkeypatch
):
    train_net = load_tool("train_net.py")
    monkeypatch.setenv("MASTER_PORT", str(_find_free_port()))
    # The tasks import this checkout's ltm_d2.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    two_tasks = arguments(
        "--slurm-nodes",
        "1",
        "--slurm-gpus-per-node",
        "2",
        "--slurm-time",
        "10",
        output_dir=tmp_path / "slurm",
    )
    cfg = load_config(two_tasks.config_file, two_tasks.opts)
    # The local stand-in on the CPU, whatever GPUs this machine has.
    job = submit(train_net.main, two_tasks, cfg, cluster="local", local_gpus_per_node=0)
    try:
        job.results()  # both tasks' (None: training returns nothing)
    finally:
        print(job.stdout(), job.stderr(), sep="\n")  # pytest shows them when the test fails
    assert "Starting training from iteration 0" in job.stdout()
    message = train_net.submission_message(job, two_tasks)
    assert f"Submitted SLURM job {job.job_id}: 1 node(s) x 2 GPU(s)" in message
    assert f"{tmp_path / 'slurm' / 'submitit' / job.job_id}/" in message

    one_process = arguments(output_dir=tmp_path / "one")
    initial = {
        k: v.clone()
        for k, v in seeded_trainer(load_config(TINY_CONFIG, one_process.opts))
        .model.state_dict()
        .items()
    }
    train_net.main(one_process)

    def update(run):
        final = torch.load(tmp_path / run / "model_final.pth", weights_only=True)["model"]
        return {k: final[k] - initial[k] for k in initial}

    distributed, single = update("slurm"), update("one")
    assert_close_per_parameter(distributed, single)
    assert sum(bool(delta.any()) for delta in single.values()) > len(single) // 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--slurm-partition", "gpu"], "--slurm-partition without --slurm-nodes"),
        (["--slurm-nodes", "2", "--num-machines", "2"], "--num-machines with --slurm-nodes"),
        (
            ["--slurm-nodes", "2", "--num-gpus", "8"],
            "--num-gpus with --slurm-nodes: SLURM starts the workers",
        ),
        (["--slurm-nodes", "0"], "--slurm-nodes 0: expected a number of at least 1"),
    ],
)
def test_slurm_options_that_contradict_each_other_are_refused(flags, message):
    with pytest.raises(UserError, match=message):
        slurm_requested(arguments(*flags))


def test_a_run_without_slurm_options_is_not_submitted():
    assert not slurm_requested(arguments("--num-gpus", "2"))


def test_without_submitit_a_submission_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    args = arguments("--slurm-nodes", "2", output_dir=tmp_path)
    with pytest.raises(
        UserError, match=r"submitit, which is not installed: pip install -e '\.\[slurm\]'"
    ):
        submit(None, args, load_config(TINY_CONFIG, args.opts))


def test_a_submission_from_a_machine_without_sbatch_says_where_to_submit(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch there
    args = arguments("--slurm-nodes", "2", output_dir=tmp_path)
    with pytest.raises(
        UserError, match="there is no sbatch on this machine. Submit from a machine"
    ):
        submit(None, args, load_config(TINY_CONFIG, args.opts))


@pytest.mark.slow
def test_train_net_without_sbatch_ends_with_the_message_and_no_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    log = run("--slurm-nodes", "2", "OUTPUT_DIR", str(tmp_path / "out"), expect_success=False)
    assert "Error: --slurm-nodes: there is no sbatch on this machine." in log
    assert "Traceback" not in log


def test_a_preempted_job_is_resubmitted_with_resume_and_the_same_options():
    submitted = arguments("--slurm-nodes", "2", "--slurm-gpus-per-node", "8")
    training = SlurmTraining(load_tool("train_net.py").main, submitted)
    # submitit pickles the resubmission for the requeued job.
    resumed = pickle.loads(cloudpickle.dumps(training.checkpoint().function)).args
    assert resumed.resume and not submitted.resume
    assert {**vars(resumed), "resume": False} == vars(submitted)
