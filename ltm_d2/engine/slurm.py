"""
A run of train_net.py submitted to a SLURM cluster with submitit (`--slurm-nodes`). Each SLURM
task is one worker: it reads its rank, the number of workers and the address of the job's first
node from the SLURM environment (submitit's JobEnvironment), then starts as a worker of
ltm_d2/engine/launch.py does (the bounded wait for the others, NCCL on GPUs, gloo on the CPU) and
runs the same training function. A job preempted or out of time is requeued and continues from its
last checkpoint (--resume).
"""

import copy
import os
import shutil
import zlib

from detectron2.engine import default_argument_parser

from ..errors import UserError
from .launch import run_worker

SUBMITIT_FOLDER = "submitit"  # under OUTPUT_DIR: one folder per job, its tasks' logs and pickles
# The ports a job's first node serves the workers' meeting on, one chosen by the job id; the
# variable MASTER_PORT, where set, names another.
FIRST_PORT, NUM_PORTS = 20000, 40000
DEFAULT_SLURM_TIME = 24 * 60  # minutes
COUNTS = ("--slurm-nodes", "--slurm-gpus-per-node", "--slurm-time")


def add_slurm_arguments(parser) -> None:
    """The --slurm-* options of train_net.py."""
    group = parser.add_argument_group(
        "SLURM", "submit the run to a SLURM cluster with submitit (pip install -e '.[slurm]')"
    )
    group.add_argument(
        "--slurm-nodes",
        type=int,
        metavar="N",
        help="submit the run as a SLURM job on N nodes instead of running it here",
    )
    group.add_argument(
        "--slurm-gpus-per-node",
        type=int,
        metavar="G",
        help="GPUs per node, one worker (SLURM task) each (default: 1)",
    )
    group.add_argument("--slurm-partition", metavar="P", help="the SLURM partition")
    group.add_argument(
        "--slurm-time",
        type=int,
        metavar="MIN",
        help=f"time limit of the job in minutes (default: {DEFAULT_SLURM_TIME}); a job that "
        "reaches it is requeued and continues with --resume",
    )


def slurm_requested(args) -> bool:
    """
    Whether the arguments `args` of train_net.py submit the run to SLURM; a UserError when they
    give --slurm-* options without --slurm-nodes, or with the options that start the workers by
    hand (--num-gpus, --num-machines, --machine-rank, --dist-url: SLURM places the workers).
    """
    given = [k for k, v in vars(args).items() if k.startswith("slurm_") and v is not None]
    if not given:
        return False
    options = ", ".join("--" + flag.replace("_", "-") for flag in given)
    if args.slurm_nodes is None:
        raise UserError(f"{options} without --slurm-nodes: add --slurm-nodes N to submit to SLURM.")
    by_hand = [
        flag
        for flag, value, default in (
            ("--num-gpus", args.num_gpus, 1),
            ("--num-machines", args.num_machines, 1),
            ("--machine-rank", args.machine_rank, 0),
            ("--dist-url", args.dist_url, default_argument_parser().get_default("dist_url")),
        )
        if value != default
    ]
    if by_hand:
        raise UserError(
            f"{', '.join(by_hand)} with --slurm-nodes: SLURM starts the workers, one per GPU of "
            "each node. Give the nodes and GPUs as --slurm-nodes N --slurm-gpus-per-node G, "
            f"without {', '.join(by_hand)}."
        )
    counts = (args.slurm_nodes, args.slurm_gpus_per_node, args.slurm_time)
    wrong = [f"{flag} {n}" for flag, n in zip(COUNTS, counts) if n is not None and n < 1]
    if wrong:
        raise UserError(f"{', '.join(wrong)}: expected a number of at least 1.")
    return True


def slurm_parameters(args, cfg) -> dict:
    """submitit's parameters of the job of `args` (the --slurm-* options) training `cfg`: a task
    per GPU, each with the CPUs of its DATALOADER.NUM_WORKERS loader workers and one more."""
    gpus = args.slurm_gpus_per_node or 1
    parameters = {
        "name": "ltm_d2:" + os.path.splitext(os.path.basename(args.config_file))[0],
        "nodes": args.slurm_nodes,
        "tasks_per_node": gpus,
        "gpus_per_node": gpus,
        "cpus_per_task": cfg.DATALOADER.NUM_WORKERS + 1,
        "timeout_min": args.slurm_time or DEFAULT_SLURM_TIME,
    }
    if args.slurm_partition:
        parameters["slurm_partition"] = args.slurm_partition
    return parameters


def submit(main_func, args, cfg, cluster: str = "slurm", **parameters):
    """
    Submit `main_func(args)`, the training of `cfg`, as a job of `cluster`: "slurm", or "local",
    submitit's stand-in that runs the tasks as processes of this machine. Its logs go to
    OUTPUT_DIR/submitit/JOB_ID/. `parameters` are submitit's, over :func:`slurm_parameters`.
    Returns submitit's Job.
    """
    try:
        import submitit
    except ImportError:
        raise UserError(
            "--slurm-nodes needs submitit, which is not installed: pip install -e '.[slurm]' "
            "(or pip install submitit)."
        ) from None
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UserError(
            "--slurm-nodes: there is no sbatch on this machine. Submit from a machine of the "
            "SLURM cluster (a login node), or train here without --slurm-* options."
        )
    folder = os.path.join(cfg.OUTPUT_DIR, SUBMITIT_FOLDER, "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**{**slurm_parameters(args, cfg), **parameters})
    return executor.submit(SlurmTraining(main_func, args))


def worker_layout(job_env):
    """
    The worker of submitit's JobEnvironment `job_env` as launch.run_worker takes it: (world size,
    workers per node, nodes, node), its local rank, and the tcp:// address of the job's first
    node, at MASTER_PORT or a port chosen by the job id (the same in every task).
    """
    per_node = job_env.num_tasks // job_env.num_nodes
    layout = (job_env.num_tasks, per_node, job_env.num_nodes, job_env.node)
    port = (
        os.environ.get("MASTER_PORT")
        or FIRST_PORT + zlib.crc32(job_env.job_id.encode()) % NUM_PORTS
    )
    return layout, job_env.local_rank, f"tcp://{job_env.hostnames[0]}:{port}"


class SlurmTraining:
    """
    What the job runs in each task: `main_func(args)` on the worker of the task. submitit pickles
    it for the cluster, and calls `checkpoint` when the job is preempted or out of time: the job
    is requeued with --resume.
    """

    def __init__(self, main_func, args):
        self.main_func = main_func
        self.args = args

    def __call__(self):
        import submitit

        layout, local_rank, dist_url = worker_layout(submitit.JobEnvironment())
        return run_worker(
            local_rank, self.main_func, layout, dist_url, (self.args,), self.args.join_timeout
        )

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        resumed = copy.copy(self.args)
        resumed.resume = True
        return DelayedSubmission(SlurmTraining(self.main_func, resumed))
