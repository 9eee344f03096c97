"""
Timing and peak memory of a callable, on the GPU when there is one, else on the CPU, and the
tables the benchmarks print.

Time: median of `repeats` runs after `warmup` runs (CUDA events on the GPU, perf_counter on the
CPU). Peak memory: the largest number of bytes allocated by PyTorch during one run beyond what
was allocated when it started: `torch.cuda.max_memory_allocated` on the GPU; on the CPU, the
running total of allocations minus frees that the PyTorch profiler records ("[memory]" events,
`profile_memory=True`), which sees every tensor allocation of the CPU allocator, unlike
tracemalloc, and unlike the process RSS is not blurred by the C library returning memory late.
"""

import json
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

from ltm_d2.engine.precision import cpu_capability

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def describe_device() -> str:
    """The device the benchmarks run on, in words: the GPU's name, or the CPU's capability (AVX2,
    AVX512, AMX: what its speed, in bfloat16 above all, depends on) and cores."""
    if DEVICE == "cuda":
        return torch.cuda.get_device_name()
    return (
        f"CPU ({cpu_capability()}; {os.cpu_count()} cores, {torch.get_num_threads()} threads), "
        "no GPU"
    )


def _synchronize():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def run_times(fn: Callable[[], None], repeats: int, warmup: int = 1) -> List[float]:
    """Seconds of each of `repeats` calls of `fn`, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if DEVICE == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


def peak_memory(fn: Callable[[], None]) -> int:
    """Bytes: the peak of PyTorch's allocations during one call of `fn`, above its start."""
    _synchronize()
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    totals = [
        e["args"]["Total Allocated"]
        for e in events
        if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0
    ]
    return max([0, *totals])


class Timing:
    """Median, min and max of run times, in seconds."""

    def __init__(self, times: Sequence[float]):
        self.times = list(times)
        self.median = statistics.median(self.times)

    def spread(self) -> str:
        return f"{min(self.times) * 1e3:.0f}-{max(self.times) * 1e3:.0f}"


def write_json(path: str, data):
    """`data` as JSON at `path`, its folder made if needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence]):
    """A GitHub-markdown table, so that it can be pasted into docs/speed.md as is."""
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


def interleaved_times(
    fns: Dict[str, Callable[[], None]], repeats: int, warmup: int = 1
) -> Dict[str, Timing]:
    """
    Times of several callables measured in turns (a, b, a, b, ...), so that a change of the
    machine's load during the run falls on all of them alike.
    """
    for fn in fns.values():
        run_times(fn, repeats=0, warmup=warmup)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name] += run_times(fn, repeats=1, warmup=0)
    return {name: Timing(t) for name, t in times.items()}
