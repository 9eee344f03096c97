#!/usr/bin/env python
"""
The checks that need a GPU, in one command (`make gpu-check`, docs/gpu_check.md): the tests'
CUDA cases, half-precision training, train_net.py on one GPU, and the benchmarks on CUDA. Each
part runs in a process of its own under its own time limit (together at most 8 minutes), so a
part that is slow, crashes or lacks a package becomes a row of the summary instead of ending the
run. The summary is printed and written to OUTPUT/summary.md and OUTPUT/summary.json, each part's
output to OUTPUT/logs/PART.log.

    python tools/gpu_check.py [--output output/gpu_check] [--parts PART ...]
                              [--time-limit PART=SECONDS ...] [--allow-cpu]

Without a CUDA device it prints one line and exits 0; --allow-cpu runs the parts on the CPU
instead (this script's own tests do). Exit status 1 when a part failed.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # dev/ of this checkout: the runner, set-up and summary
from dev.gpu_check import (  # noqa: E402
    install_wheels,
    junit_outcome,
    last_line,
    row,
    run_in_process,
    write_summary,
)
from dev.report import git_commit  # noqa: E402

# Wheels of the packages a bare GPU machine lacks (`make gpu-wheels` fills it where pip works).
WHEELS = os.path.join(REPO, ".gpu-wheels")
DEMO_CONFIG = os.path.join(REPO, "configs", "Shapes-Detection", "ltm_R_18_FPN_demo.yaml")
TINY_CONFIG = os.path.join(REPO, "configs", "Shapes-Detection", "ltm_R_18_FPN_tiny.yaml")
SETUP_LIMIT = 30  # seconds to check that detectron2 imports, or to install the wheels
TOTAL_LIMIT = 8 * 60  # seconds: the set-up and every part together


class Part(NamedTuple):
    limit: float  # seconds
    needs_detectron2: bool
    run: Callable[[argparse.Namespace], dict]  # -> {"status", "figures", "details"}
    what: str


# ---------------------------------------------------------------------------------------------
# The parts. Each runs in its own process (`--run-part NAME`) and returns a row.


def part_environment(args) -> dict:
    """Python, torch, the GPU and every package the other parts import."""
    import importlib
    import platform

    import torch

    details = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": args.device,
    }
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        details.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
        )
    missing, found = [], {}
    for name in ("torchvision", "detectron2", "fvcore", "iopath", "pycocotools", "cv2", "ltm_d2"):
        try:
            module = importlib.import_module(name)
        except Exception as e:  # an ImportError, or a package that breaks while importing
            missing.append(f"{name} ({type(e).__name__}: {e})")
            continue
        found[name] = f"{getattr(module, '__version__', '?')} at {os.path.dirname(module.__file__)}"
    details.update(packages=found, missing=missing)
    if "ltm_d2" in found and not found["ltm_d2"].endswith(os.path.join(REPO, "ltm_d2")):
        missing.append(f"ltm_d2 of this checkout (imported: {found['ltm_d2']})")
    where = details.get("gpu", "CPU")
    figures = (
        f"{where}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"Python {details['python']}, detectron2 {found.get('detectron2', 'missing')}"
    )
    if missing:
        return row("fail", f"{figures}; missing: {'; '.join(missing)}", **details)
    return row("pass", figures, **details)


def part_tests(args) -> dict:
    """The CUDA cases of the test suite (`pytest -m cuda`)."""
    report = os.path.join(args.work, "tests.xml")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "cuda",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        f"--junitxml={report}",
        "-rfEs",
        "tests",
    ]
    print(" ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=False)
    if not os.path.isfile(report):
        return row("fail", "pytest wrote no report (see the log)")
    counts, failed = junit_outcome(report)
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    figures = (
        f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped"
    )
    if counts["failures"] or counts["errors"]:
        return row("fail", figures, failed=failed, **counts)
    if passed == 0:
        return row(
            "skip", f"{figures} (no CUDA device)" if args.device == "cpu" else figures, **counts
        )
    return row("pass", figures, **counts)


def part_amp(args) -> dict:
    """Half-precision training (SOLVER.AMP.ENABLED) against float32 (bench/amp.py)."""
    return bench_part(
        "amp",
        ["--config-file", args.amp_config, "--iterations", str(args.amp_iterations)],
        summarise_amp,
        args,
    )


def summarise_amp(result: dict) -> dict:
    same = result["same_batch"]
    figures = (
        f"same batch: loss {same['float32_loss']:.4f} float32, "
        f"{same['autocast_loss']:.4f} {same['autocast_dtype']} "
        f"(rel. diff {same['relative_difference']:.1e}, tolerance "
        f"{result['tolerance']:.0e}); network {same['head_dtype']}, matching "
        f"{'/'.join(sorted(set(same['loss_dtypes'])))}"
    )
    for mode, run in result["training"].items():
        if "skipped" in run:
            figures += f"; {mode}: skipped ({run['skipped']})"
        else:
            figures += (
                f"; {mode}: {run['iterations']} it., {run['median_step_ms']:.1f} ms/step, "
                f"final loss {run['final_loss']:.3f}"
            )
    details = {k: v for k, v in result.items() if k != "status"}
    return row(result["status"], figures, **details)


def part_train_net(args) -> dict:
    """train_net.py --num-gpus 1 on the tiny config: train, checkpoint, --eval-only."""
    out = os.path.join(args.work, "train_net")
    base = [sys.executable, "train_net.py", "--num-gpus", "1", "--config-file", TINY_CONFIG]
    logs = {}
    for name, extra in (
        ("train", ["OUTPUT_DIR", out]),
        (
            "eval-only",
            [
                "--eval-only",
                "MODEL.WEIGHTS",
                os.path.join(out, "model_final.pth"),
                "OUTPUT_DIR",
                os.path.join(out, "eval"),
            ],
        ),
    ):
        print(" ".join(base + extra), flush=True)
        done = subprocess.run(base + extra, cwd=REPO, capture_output=True, text=True)
        logs[name] = done.stdout + done.stderr
        print(logs[name], flush=True)
        if done.returncode != 0:
            last = [line for line in logs[name].splitlines() if line.strip()][-1:]
            return row("fail", f"{name} exited with {done.returncode}: {''.join(last)}")
    from ltm_d2 import load_config

    device = load_config(os.path.join(out, "config.yaml")).MODEL.DEVICE
    checkpoint = os.path.getsize(os.path.join(out, "model_final.pth")) / 2**20
    ap = [
        line.split("copypaste:")[1].strip()
        for line in logs["eval-only"].splitlines()
        if "copypaste:" in line
    ][-1:]
    figures = (
        f"trained on {device}, model_final.pth {checkpoint:.1f} MiB, --eval-only "
        f"AP,AP50,AP75,APs,APm,APl = {''.join(ap) or 'not printed'}"
    )
    ok = device == args.device and "Evaluation results for bbox" in logs["eval-only"]
    return row("pass" if ok else "fail", figures, device=device)


def part_bench_loss(args) -> dict:
    """bench/loss.py: the loss alone at 7/50/300/1000 objects per image."""
    return bench_part(
        "loss",
        [
            "--objects",
            "7",
            "50",
            "300",
            "1000",
            "--repeats",
            "5",
            "--plot",
            os.path.join(args.work, "loss_scaling.png"),
        ],
        summarise_loss,
        args,
    )


def summarise_loss(result: dict) -> dict:
    objects = sorted({r["objects"] for r in result["rows"]})
    figures = []
    for name in ("LTM", "FreeAnchor", "LTM-AF"):
        rows = {r["objects"]: r for r in result["rows"] if r["loss"] == name}
        times = "/".join(f"{rows[n]['time_ratio']:.2f}" for n in objects)
        peaks = "/".join(f"{rows[n]['peak_ratio']:.2f}" for n in objects)
        figures.append(f"{name} time {times}, peak {peaks}")
    title = f"x RetinaNet at {'/'.join(map(str, objects))} objects: "
    return row("pass", title + "; ".join(figures), **result)


def part_bench_model(args) -> dict:
    """bench/model.py: training step and inference, R-50-FPN, 2 images of 800x1216."""
    return bench_part(
        "model",
        ["--size", "800", "1216", "--objects", "7", "--repeats", "5"],
        summarise_model,
        args,
    )


def summarise_model(result: dict) -> dict:
    figures = []
    for phase in ("training step", "inference"):
        rows = {r["detector"]: r for r in result["rows"] if r["phase"] == phase}
        figures.append(
            f"{phase}: RetinaNet {rows['RetinaNet']['median_ms']:.1f} ms, "
            f"LTM {rows['LTM']['median_ms']:.1f} ms ({rows['LTM']['ratio']:.3f}x)"
        )
    return row("pass", "; ".join(figures), **result)


def bench_part(script: str, argv: List[str], summarise, args) -> dict:
    """Run bench/SCRIPT.py's main in this process, then summarise the JSON it wrote."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    module = __import__(script)
    path = os.path.join(args.work, f"bench_{script}.json")
    module.main(argv + ["--json", path])
    with open(path) as f:
        return summarise(json.load(f))


PARTS: Dict[str, Part] = {
    "environment": Part(20, False, part_environment, "Python, torch, GPU, packages"),
    "tests": Part(90, True, part_tests, "the tests' CUDA cases (pytest -m cuda)"),
    "amp": Part(140, True, part_amp, "half precision against float32, demo config"),
    "train_net": Part(60, True, part_train_net, "train_net.py --num-gpus 1: train, --eval-only"),
    "bench_loss": Part(80, True, part_bench_loss, "bench/loss.py on CUDA"),
    "bench_model": Part(60, True, part_bench_model, "bench/model.py, 800x1216, on CUDA"),
}


# ---------------------------------------------------------------------------------------------
# The runner.


def run_part(name: str, limit: float, args, env: dict) -> dict:
    """A part in a child process under its time limit; its row, or a row that says what broke."""
    work = os.path.join(args.output, "work", name)
    os.makedirs(work, exist_ok=True)
    result = os.path.join(work, "result.json")
    log = os.path.join(args.output, "logs", f"{name}.log")
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--run-part",
        name,
        "--device",
        args.device,
        "--work",
        work,
        "--result",
        result,
        "--amp-config",
        args.amp_config,
        "--amp-iterations",
        str(args.amp_iterations),
    ]
    print(f"gpu-check: {name} (at most {limit:g} s) ...", flush=True)
    status, seconds = run_in_process(command, log, env, limit, REPO)
    if status is None:
        outcome = row("fail", f"stopped at its time limit of {limit:g} s; log: {log}")
    elif status != 0 or not os.path.isfile(result):
        outcome = row("fail", f"exited with {status}: {last_line(log)}")
    else:
        with open(result) as f:
            outcome = json.load(f)
    return {"check": name, **outcome, "seconds": round(seconds, 1)}


def parse_limits(pairs: List[str]) -> Dict[str, float]:
    limits = {"setup": SETUP_LIMIT, **{name: part.limit for name, part in PARTS.items()}}
    for pair in pairs:
        name, _, seconds = pair.partition("=")
        if name not in limits or not seconds:
            raise SystemExit(
                f"--time-limit {pair}: expected PART=SECONDS, PART one of {', '.join(limits)}"
            )
        limits[name] = float(seconds)
    return limits


def main(argv=None) -> int:
    parts = "\n".join(f"  {name:12} {p.limit:4.0f} s  {p.what}" for name, p in PARTS.items())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"parts, their time limits:\n{parts}",
    )
    parser.add_argument("--output", default=os.path.join(REPO, "output", "gpu_check"))
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--time-limit", nargs="+", default=[], metavar="PART=SECONDS")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="without a CUDA device, run the parts on the CPU"
    )
    parser.add_argument("--amp-config", default=DEMO_CONFIG)
    parser.add_argument("--amp-iterations", type=int, default=200)
    # One part, in the child process the runner starts.
    parser.add_argument("--run-part", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run_part:
        outcome = PARTS[args.run_part].run(args)
        with open(args.result, "w") as f:
            json.dump(outcome, f, indent=1)
        return 0

    limits = parse_limits(args.time_limit)
    budget = limits["setup"] + sum(limits[name] for name in args.parts)
    if budget > TOTAL_LIMIT:
        print(
            f"gpu-check: the time limits add up to {budget:g} s, more than the "
            f"{TOTAL_LIMIT} s this check is meant to take on one GPU."
        )
    try:
        import torch
    except ImportError as e:
        print(
            f"gpu-check: torch does not import with {sys.executable} ({e}); run it with the "
            "Python that holds torch: make gpu-check GPU_PYTHON=/path/to/python"
        )
        return 1
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            f"gpu-check: no CUDA device on this machine (torch {torch.__version__}): "
            "nothing to check."
        )
        return 0
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.output = os.path.abspath(args.output)
    os.makedirs(os.path.join(args.output, "logs"), exist_ok=True)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in [REPO, os.environ.get("PYTHONPATH", "")] if p),
    )
    env.setdefault("DETECTRON2_DATASETS", os.path.join(REPO, "datasets"))
    env["PYTHONUNBUFFERED"] = "1"

    start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rows = [install_wheels(WHEELS, args.output, env, limits["setup"], REPO)]
    have_detectron2 = rows[0]["status"] == "pass"
    for name in args.parts:
        if PARTS[name].needs_detectron2 and not have_detectron2:
            skipped = row("skip", "not run: detectron2 does not import (setup)")
            rows.append({"check": name, **skipped, "seconds": 0.0})
            continue
        rows.append(run_part(name, limits[name], args, env))
    device = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"CPU ({os.cpu_count()} cores), no CUDA device"
    )
    summary = {
        "started": started,
        "device": device,
        "commit": git_commit(REPO),
        "seconds": round(time.perf_counter() - start, 1),
        "time_limits": {name: limits[name] for name in ["setup", *args.parts]},
        "rows": rows,
    }
    print(write_summary(args.output, summary))
    print(f"gpu-check: summary in {args.output}/summary.md and summary.json")
    return 1 if any(r["status"] == "fail" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
