"""
tools/gpu_check.py (`make gpu-check`) on a machine without a GPU: the one-line skip, and real CPU
runs of its small parts (--allow-cpu) for the runner, the time limits and the summary it writes.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from ltm_d2.engine.precision import cpu_has_native_bfloat16

from support import REPO, TINY_CONFIG, load_tool

# Each test runs the tool, or builds models of every config once per module.
pytestmark = pytest.mark.slow

SCRIPT = os.path.join(REPO, "tools", "gpu_check.py")


def gpu_check(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """The environment part and the half-precision part (tiny config, 2 steps) on the CPU."""
    output = tmp_path_factory.mktemp("gpu_check")
    done = gpu_check(
        "--allow-cpu",
        "--parts",
        "environment",
        "amp",
        "--output",
        str(output),
        "--amp-config",
        TINY_CONFIG,
        "--amp-iterations",
        "2",
        "--time-limit",
        "setup=600",
        "environment=600",
        "amp=600",
    )
    summary = json.loads((output / "summary.json").read_text())
    return done, output, {r["check"]: r for r in summary["rows"]}


def test_the_time_limits_of_the_set_up_and_all_parts_add_up_to_at_most_8_minutes():
    script = load_tool("tools/gpu_check.py")
    total = script.SETUP_LIMIT + sum(part.limit for part in script.PARTS.values())
    assert total <= script.TOTAL_LIMIT == 480


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    done = gpu_check("--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        f"gpu-check: no CUDA device on this machine (torch {torch.__version__}): nothing to check."
    ]
    assert not (tmp_path / "out").exists()


def test_every_part_run_is_a_row_with_status_figures_and_seconds(cpu_run):
    done, _, rows = cpu_run
    assert list(rows) == ["setup", "environment", "amp"], done.stdout + done.stderr
    for r in rows.values():
        assert r["status"] in ("pass", "fail", "skip") and r["figures"] and r["seconds"] >= 0


def test_the_environment_part_names_torch_and_finds_this_checkouts_packages(cpu_run):
    _, _, rows = cpu_run
    environment = rows["environment"]
    assert environment["status"] == "pass", environment["figures"]
    assert f"torch {torch.__version__}" in environment["figures"]
    assert environment["details"]["packages"]["ltm_d2"].endswith(os.path.join(REPO, "ltm_d2"))


def test_half_precision_on_the_cpu_compares_one_batch(cpu_run):
    _, _, rows = cpu_run
    amp = rows["amp"]
    same = amp["details"]["same_batch"]
    assert same["head_dtype"] == "bfloat16" and set(same["loss_dtypes"]) == {"float32"}
    assert same["relative_difference"] <= amp["details"]["tolerance"]
    assert len(amp["details"]["training"]["float32"]["losses"]) == 2


def test_amp_training_on_the_cpu_runs_only_where_the_cpu_has_native_bfloat16(cpu_run):
    _, _, rows = cpu_run
    amp = rows["amp"]
    training = amp["details"]["training"]["amp"]
    if cpu_has_native_bfloat16():
        assert amp["status"] == "pass", amp["figures"]
        assert len(training["losses"]) == 2 and "bfloat16 autocast" in training["precision"]
    else:
        assert amp["status"] == "skip", amp["figures"]
        assert "no native bfloat16" in training["skipped"]


def test_the_markdown_summary_has_the_rows_of_the_json_summary(cpu_run):
    done, output, rows = cpu_run
    table = [
        line
        for line in (output / "summary.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| check")
    ]
    assert [line.split(" | ")[:2] for line in table] == [
        [f"| {name}", r["status"]] for name, r in rows.items()
    ]
    assert (output / "summary.md").read_text() in done.stdout


def test_a_part_past_its_time_limit_is_a_failed_row_and_the_run_goes_on(tmp_path):
    done = gpu_check(
        "--allow-cpu",
        "--parts",
        "environment",
        "--output",
        str(tmp_path),
        "--time-limit",
        "setup=600",
        "environment=0.5",
    )
    assert done.returncode == 1
    (environment,) = [
        r
        for r in json.loads((tmp_path / "summary.json").read_text())["rows"]
        if r["check"] == "environment"
    ]
    assert environment["status"] == "fail"
    assert environment["figures"].startswith("stopped at its time limit of 0.5 s")
    assert environment["seconds"] < 30


def test_an_unknown_part_in_a_time_limit_is_refused_naming_the_parts(tmp_path):
    done = gpu_check("--allow-cpu", "--output", str(tmp_path), "--time-limit", "bench=10")
    assert done.returncode != 0
    assert "--time-limit bench=10: expected PART=SECONDS" in done.stderr + done.stdout
    assert "environment" in done.stderr + done.stdout
