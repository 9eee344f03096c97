"""
Half precision (SOLVER.AMP.ENABLED) against float32: the loss of one batch under autocast
(float16 on CUDA, bfloat16 on the CPU) and in float32 from the same weights, the precision of the
network and of the matching there, then ITERATIONS training steps of each (the training step
that SOLVER.AMP.ENABLED True and False choose on this device, engine/precision.py; the project's
optimizer, the same batches in the same order): all losses finite, the median step time of each.

    python bench/amp.py [--config-file CONFIG] [--iterations 200] [--json PATH]

On a CPU without native bfloat16, SOLVER.AMP.ENABLED trains in float32: only that run is made.
"""

import argparse
import itertools
import math
import os
import statistics
import sys
import time

import torch

from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import DEVICE, describe_device, write_json  # noqa: E402

from ltm_d2 import load_config  # noqa: E402
from ltm_d2.engine import Trainer  # noqa: E402
from ltm_d2.engine.precision import training_precision  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOW_PRECISION = {"cuda": torch.float16, "cpu": torch.bfloat16}
# Largest relative difference between the autocast and the float32 loss of the same batch.
TOLERANCE = 5e-3
DISTINCT_BATCHES = 20  # drawn once from the training loader, then repeated in turn
WARMUP_STEPS = 10  # not in the median step time


def build(cfg, seed=0):
    torch.manual_seed(seed)
    model = Trainer.build_model(cfg)
    model.train()
    return model


def same_batch(cfg, batch) -> dict:
    """The loss of one batch in float32 and under autocast, from the same weights."""
    model = build(cfg)
    head_dtypes = []
    model.head.register_forward_hook(lambda m, i, out: head_dtypes.append(str(out[0][0].dtype)))
    with EventStorage(0):
        full = sum(model(batch).values()).item()
        with torch.autocast(DEVICE, dtype=LOW_PRECISION[DEVICE]):
            losses = model(batch)
    mixed = sum(losses.values()).item()
    return {
        "float32_loss": full,
        "autocast_loss": mixed,
        "autocast_dtype": str(LOW_PRECISION[DEVICE]).replace("torch.", ""),
        "relative_difference": abs(mixed - full) / abs(full),
        "head_dtype": head_dtypes[-1].replace("torch.", ""),
        "loss_dtypes": [str(v.dtype).replace("torch.", "") for v in losses.values()],
    }


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def train(cfg, batches, precision, iterations: int) -> dict:
    """`iterations` steps in `precision` from the same initial weights on `batches` in turn:
    losses, step times."""
    model = build(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    trainer = precision.trainer(model, itertools.cycle(batches), optimizer)
    losses, times = [], []
    with EventStorage(0) as storage:
        for i in range(iterations):
            trainer.iter = storage.iter = i
            _sync()
            start = time.perf_counter()
            trainer.run_step()  # raises FloatingPointError on a non-finite loss
            _sync()
            times.append(time.perf_counter() - start)
            losses.append(storage.history("total_loss").latest())
    timed = times[WARMUP_STEPS:] or times
    return {
        "precision": precision.describe(),
        "iterations": iterations,
        "median_step_ms": statistics.median(timed) * 1e3,
        "final_loss": statistics.mean(losses[-DISTINCT_BATCHES:]),
        "all_finite": all(math.isfinite(x) for x in losses),
        "losses": losses,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config-file",
        default=os.path.join(REPO, "configs", "Shapes-Detection", "ltm_R_18_FPN_demo.yaml"),
    )
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, ["MODEL.DEVICE", DEVICE])
    seed_all_rng(0)  # the same batches in every run
    loader = iter(Trainer.build_train_loader(cfg))
    batches = [next(loader) for _ in range(min(args.iterations, DISTINCT_BATCHES))]
    del loader

    result = {
        "device": describe_device(),
        "config": args.config_file,
        "tolerance": TOLERANCE,
        "same_batch": same_batch(cfg, batches[0]),
        "training": {},
    }
    print(f"Same batch: {result['same_batch']}", flush=True)
    for mode, amp in (("float32", False), ("amp", True)):
        cfg.defrost()
        cfg.SOLVER.AMP.ENABLED = amp
        precision = training_precision(cfg, torch.device(DEVICE))
        print(precision.describe(), flush=True)
        if amp and not precision.autocast:
            result["training"][mode] = {"skipped": precision.describe()}
            continue
        result["training"][mode] = train(cfg, batches, precision, args.iterations)
        run = result["training"][mode]
        print(
            f"{mode}: {run['iterations']} iterations, {run['median_step_ms']:.1f} ms/step "
            f"(median after {WARMUP_STEPS}), mean loss of the last {DISTINCT_BATCHES} "
            f"{run['final_loss']:.4f}",
            flush=True,
        )
    same = result["same_batch"]
    ok = (
        same["relative_difference"] <= TOLERANCE
        and set(same["loss_dtypes"]) == {"float32"}
        and same["head_dtype"] == result["same_batch"]["autocast_dtype"]
        and all(run.get("all_finite", True) for run in result["training"].values())
    )
    ran_amp = "skipped" not in result["training"]["amp"]
    result["status"] = "fail" if not ok else ("pass" if ran_amp else "skip")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
