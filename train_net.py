#!/usr/bin/env python
"""
Train or evaluate an LTM detector, the Detectron2 way:

    python train_net.py --config-file configs/COCO-Detection/ltm_R_50_FPN_1x.yaml --num-gpus 8
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth

Without a GPU it runs on the CPU; `--num-gpus N` then starts N CPU workers (gloo). Ctrl-C ends
training with the command that continues it from its last checkpoint (exit status 130).
`--slurm-nodes N --slurm-gpus-per-node G` submits the same run to a SLURM cluster (submitit),
options here rather than in a separate tool: one command line trains here or on SLURM alike.
"""

import logging
import os
import shlex
import sys

from detectron2.engine import default_argument_parser, default_setup, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ltm_d2 import load_config
from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.engine import Trainer
from ltm_d2.engine.launch import DEFAULT_JOIN_TIMEOUT, launch, share_cpu_cores
from ltm_d2.engine.logs import log_records_held
from ltm_d2.engine.slurm import add_slurm_arguments, slurm_requested, submit
from ltm_d2.errors import INTERRUPTED_EXIT, UserErrorTracebackFilter, debugging, run_main
from ltm_d2.preflight import check_output_dir, check_run


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ltm_d2")
    # A user error that ends training: its message in the log, not its traceback.
    logging.getLogger("detectron2.engine.train_loop").addFilter(UserErrorTracebackFilter())
    if cfg.MODEL.DEVICE == "cpu":
        logging.getLogger("detectron2").info("No GPU available: running on the CPU.")
        share_cpu_cores()
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        SafeCheckpointer(model, save_dir=cfg.OUTPUT_DIR, cfg=cfg).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:
        # After training, also evaluate with multi-scale and flip testing.
        trainer.register_hooks(
            [hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))]
        )
    return trainer.train()


def argument_parser():
    """Detectron2's arguments, --join-timeout and the --slurm-* options."""
    parser = default_argument_parser()
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=DEFAULT_JOIN_TIMEOUT,
        metavar="SECONDS",
        help="with --num-machines > 1: how long to wait for every machine to join (default: "
        "%(default)g); a machine missing then ends the run with a message naming it",
    )
    add_slurm_arguments(parser)
    return parser


def start(args):
    """The checks that need no model, on this machine, then the workers, or the SLURM job that
    runs them (--slurm-nodes)."""
    slurm = slurm_requested(args)
    # The log (OUTPUT_DIR/log.txt and the console) from here on, with what loading the config
    # warned of (the datasets' class names), for the checks' warnings and progress.
    with log_records_held("ltm_d2"):
        cfg = load_config(args.config_file, args.opts)
        check_output_dir(cfg.OUTPUT_DIR)
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=0, name="ltm_d2")
    check_run(cfg, not args.eval_only, args.resume)
    if slurm:
        job = submit(main, args, cfg)
        print(submission_message(job, args), flush=True)
        return
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        join_timeout=args.join_timeout,
    )


def submission_message(job, args) -> str:
    """What the user is told once `job` is submitted: its id, where its logs go, how to stop it."""
    gpus = args.slurm_gpus_per_node or 1
    return (
        f"Submitted SLURM job {job.job_id}: {args.slurm_nodes} node(s) x {gpus} GPU(s), one "
        f"worker per GPU. The logs of its tasks: {job.paths.folder}/ (rank 0's: "
        f"{job.paths.stdout}). Cancel it with: scancel {job.job_id}. Preempted or out of time, "
        "it is requeued and continues from its last checkpoint."
    )


def interruption_message(args, argv) -> str:
    """
    What Ctrl-C leaves of the run of `args` (the command line `argv`): the checkpoint that
    OUTPUT_DIR/last_checkpoint names, and the command that continues from it, `argv` with
    --resume before the KEY VALUE overrides.
    """
    if args.eval_only:
        return "Interrupted: the evaluation did not finish. Run the same command again."
    output_dir = load_config(args.config_file, args.opts).OUTPUT_DIR
    try:
        with open(os.path.join(output_dir, "last_checkpoint")) as f:
            checkpoint = os.path.join(output_dir, f.read().strip())
    except FileNotFoundError:
        return (
            f"Interrupted. No checkpoint was written yet in {output_dir}: run the same command "
            "again to start over."
        )
    flags = argv[1 : len(argv) - len(args.opts)]
    resume = [] if args.resume else ["--resume"]
    command = shlex.join(["python", argv[0], *flags, *resume, *args.opts])
    return f"Interrupted. The last checkpoint is {checkpoint}: continue from it with\n  {command}"


def run(args):
    """
    `start(args)`, ending on a user error with its message (run_main) and on Ctrl-C with
    :func:`interruption_message` and exit status 130, without a traceback (LTM_D2_DEBUG=1 shows
    them).
    """
    try:
        run_main(start, args)
    except KeyboardInterrupt:
        if debugging():
            raise
        print(interruption_message(args, sys.argv), file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT)


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    run(args)
