"""
The machinery of the GPU check (tools/gpu_check.py, docs/gpu_check.md), apart from what it
checks: the row each part becomes, a process under a time limit, installing the wheels a bare GPU
machine lacks, pytest's JUnit report as counts, and the summary as JSON and Markdown.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, Optional, Tuple

from dev.report import markdown_table

STATUSES = ("pass", "fail", "skip")


def row(status: str, figures: str, **details) -> dict:
    """The outcome of one part: its status, a line of figures, and whatever else it measured."""
    assert status in STATUSES, status
    return {"status": status, "figures": figures, "details": details}


def run_in_process(
    command: List[str], log: str, env: dict, limit: float, cwd: str
) -> Tuple[Optional[int], float]:
    """(exit status or None when the time limit ended it, seconds) of `command`, logged to `log`;
    at the limit, the command and every process it started are killed."""
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = None
    return status, time.perf_counter() - start


def last_line(log: str) -> str:
    """The last line of `log` that is not blank: most often what went wrong."""
    with open(log, errors="replace") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else "no output"


def import_error(module: str, env: dict, limit: float, cwd: str) -> str:
    """Why `module` does not import with `env`; "" when it does."""
    probe = [sys.executable, "-c", f"import {module}"]
    try:
        done = subprocess.run(
            probe, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired:
        return f"importing {module} took over {limit:g} s"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return "" if done.returncode == 0 else (lines[-1] if lines else f"exit {done.returncode}")


def install_wheels(wheels: str, output: str, env: dict, limit: float, cwd: str) -> dict:
    """
    The set-up row: nothing to do when detectron2 imports with `env`; otherwise the wheels of the
    folder `wheels` installed into OUTPUT/site (log in OUTPUT/logs/setup.log), which then heads
    env's PYTHONPATH.
    """
    start = time.perf_counter()
    why = import_error("detectron2", env, limit, cwd)
    if not why:
        outcome = row("pass", "detectron2 importable: nothing to install")
    elif why.startswith("importing"):
        outcome = row("fail", why)
    elif not glob.glob(os.path.join(wheels, "*.whl")):
        outcome = row(
            "fail",
            f"detectron2 does not import ({why}) and {wheels} holds no wheels: run "
            "`make gpu-wheels` on a machine where pip reaches PyPI and bring .gpu-wheels along",
        )
    else:
        files = sorted(glob.glob(os.path.join(wheels, "*.whl")))
        site = os.path.join(output, "site")
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
        command += ["--no-compile", "--target", site, *files]
        log = os.path.join(output, "logs", "setup.log")
        status, _ = run_in_process(command, log, env, limit, cwd)
        env["PYTHONPATH"] = os.pathsep.join([site, env["PYTHONPATH"]])
        if status == 0 and not import_error("detectron2", env, limit, cwd):
            outcome = row("pass", f"installed {len(files)} wheels of {wheels} into {site}")
        else:
            outcome = row(
                "fail", f"installing {len(files)} wheels into {site} failed ({last_line(log)})"
            )
    return {"check": "setup", **outcome, "seconds": round(time.perf_counter() - start, 1)}


def junit_outcome(report: str) -> Tuple[Dict[str, int], List[str]]:
    """The counts of pytest's JUnit XML `report` (tests, failures, errors, skipped) and a line
    for each test that failed or errored."""
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        for problem in list(case.findall("failure")) + list(case.findall("error")):
            message = (problem.get("message") or "").splitlines()
            failed.append(
                f"{case.get('classname')}::{case.get('name')}: "
                f"{message[0] if message else problem.tag}"
            )
    return counts, failed


def markdown(summary: dict) -> str:
    """The summary table, then each benchmark's rows, as GitHub markdown."""
    rows = [
        [r["check"], r["status"], r["figures"].replace("|", "/"), f"{r['seconds']:.1f}"]
        for r in summary["rows"]
    ]
    parts = [
        f"# gpu-check, {summary['started']}",
        f"{summary['device']}; commit {summary['commit']}; {summary['seconds']:.0f} s in all.",
        markdown_table(["check", "status", "figures", "seconds"], rows),
    ]
    for r in summary["rows"]:
        table = r["details"].get("rows")
        if r["status"] != "pass" or not table:
            continue
        cells = [
            [f"{v:.3g}" if isinstance(v, float) else str(v) for v in x.values()] for x in table
        ]
        parts += [f"## {r['check']}", markdown_table(list(table[0]), cells)]
    return "\n\n".join(parts) + "\n"


def write_summary(output: str, summary: dict) -> str:
    """Write OUTPUT/summary.json and OUTPUT/summary.md; returns the Markdown."""
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    text = markdown(summary)
    with open(os.path.join(output, "summary.md"), "w") as f:
        f.write(text)
    return text
