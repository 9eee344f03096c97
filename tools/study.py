#!/usr/bin/env python
"""
Does learning to match win? Trains, on the bundled dataset and with identical backbone, schedule,
inputs and seeds, the plain RetinaNet, RetinaNet (K anchors), LTM(M+), LTM and LTM-AF (2 seeds
each), and LTM with other bag sizes K, S-of-K bags and beta of Eq. 4 (one seed); evaluates each
with COCOEvaluator, AP by crowdedness group and NMS recall; writes results.md and crowdedness.png
and prints the tables. Interrupted, it resumes where it stopped (finished runs are not redone).

    python tools/study.py                      # about 2 h on a 2-core CPU (R-18, 128 px)
    python tools/study.py --preset gpu --jobs 4  # one GPU: R-50, 256 px, 4000 iterations
    python tools/study.py --tune               # evaluate on the tuning split, not on val
"""

import argparse
import os
import platform
import sys
import time

from detectron2.utils.logger import setup_logger

from ltm_d2.errors import run_main

# The checkout this script is part of: its train_net.py and configs train the runs, and its dev/
# holds the study's planning, runner and tables.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from dev.report import git_commit  # noqa: E402
from dev.study import (  # noqa: E402
    DETECTORS,
    PRESETS,
    StudyRunner,
    plan_study,
    train_command,
    write_report,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument(
        "--output-dir",
        help="default: output/study_<preset> (output/study_<preset>_tune with --tune)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, each on its share of the CPU cores (default 1)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the preset's (1 2)")
    parser.add_argument("--detectors", nargs="+", choices=list(DETECTORS), default=list(DETECTORS))
    parser.add_argument(
        "--tables", nargs="+", choices=["main", "ablation"], default=["main", "ablation"]
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="evaluate on the tuning split: for choosing settings without looking at val",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the runs' commands and stop")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write and print the tables of the runs finished so far; train nothing",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logger = setup_logger(name="ltm_d2")
    setup_logger(name="dev")  # the runner's progress (dev/study.py)
    preset = PRESETS[args.preset]
    dataset = preset.tune_dataset if args.tune else preset.val_dataset
    output_dir = args.output_dir or os.path.join(
        "output", f"study_{args.preset}" + ("_tune" if args.tune else "")
    )
    study = plan_study(preset, args.tables, args.seeds, dataset, args.detectors)
    runner = StudyRunner(study, REPO, os.path.abspath(output_dir), dataset, args.jobs)
    if args.dry_run:
        for name, run in study.runs.items():
            print(" ".join(train_command(run, REPO, runner.run_dir(name), resume=False)))
        return 0
    os.makedirs(output_dir, exist_ok=True)
    logger.info(
        f"{len(study.runs)} runs ({0 if args.report_only else len(runner.pending())} to train) "
        f"into {output_dir}, "
        f"{args.jobs} at a time; evaluated on {dataset}"
    )
    start, commit = time.perf_counter(), git_commit(REPO)
    failed = [] if args.report_only else runner.run()
    command = " ".join(["python tools/study.py", *(argv if argv is not None else sys.argv[1:])])
    header = (
        f"# ltm_d2 study, preset `{args.preset}`, evaluated on `{dataset}`\n\n"
        f"`{command}` at commit {commit}, "
        f"{platform.machine()} {os.cpu_count()} cores; this invocation took "
        f"{(time.perf_counter() - start) / 60:.1f} min. Figures: mean ± half the spread over seeds "
        "((max - min) / 2); ΔAP is paired by seed."
    )
    print(write_report(study, runner, header))
    logger.info(
        f"Tables in {os.path.join(output_dir, 'results.md')}, plot in "
        f"{os.path.join(output_dir, 'crowdedness.png')}"
    )
    if failed:
        logger.error(
            f"{len(failed)} runs failed: {', '.join(failed)}; "
            "run the same command again to retry them"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
