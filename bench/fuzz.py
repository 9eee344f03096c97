"""
The fuzzing campaign of the training losses (`make fuzz`; outside the test suite, which runs a
fixed subset): random cases (dev/loss_fuzzing.py: 1-3 images of 64x64 px, 0 to 3000 objects
each, tiny, huge, degenerate, identical boxes and boxes outside the image, logits in [-50, 50],
deltas up to ±50) for every matching mode, with S-of-K bags and under bfloat16 autocast, checking
that every loss and gradient is finite. Prints the cases run per mode, each failure with the line
that reproduces it, and exits non-zero on any failure.

    python bench/fuzz.py [--cases 10000] [--modes topk ltm_af ...] [--first-seed 0]
    python bench/fuzz.py --modes topk --seed 1234      # the one case of a reproducer line
"""

import argparse
import os
import random
import sys
import time

import torch

from detectron2.modeling import build_model

from ltm_d2 import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # dev/ of this checkout: the fuzzing cases
from dev.loss_fuzzing import NUM_CLASSES, anchors_of, check_case, draw_case  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "Shapes-Detection", "ltm_R_18_FPN_tiny.yaml")
LTM_AF = ("MODEL.META_ARCHITECTURE", "LTMAF", "MODEL.LTM.BBOX_REG_WEIGHT", "5.5")
BAG_SAMPLE = ("MODEL.LTM.BAG_SAMPLE", "8")
# name: (config overrides, bfloat16 autocast)
MODES = {
    "ltm": ((), False),
    "freeanchor": (("MODEL.LTM.MATCHING", "freeanchor"), False),
    "topk": (("MODEL.LTM.MATCHING", "topk"), False),
    "ltm_af": (LTM_AF, False),
    "ltm_bag_sample": (BAG_SAMPLE, False),
    "freeanchor_bag_sample": (("MODEL.LTM.MATCHING", "freeanchor", *BAG_SAMPLE), False),
    "topk_bag_sample": (("MODEL.LTM.MATCHING", "topk", *BAG_SAMPLE), False),
    "ltm_af_bag_sample": ((*LTM_AF, *BAG_SAMPLE), False),
    "ltm_bf16": ((), True),
    "freeanchor_bf16": (("MODEL.LTM.MATCHING", "freeanchor"), True),
    "topk_bf16": (("MODEL.LTM.MATCHING", "topk"), True),
    "ltm_af_bf16": (LTM_AF, True),
}


def build(mode: str):
    """The tiny model of `mode` with NUM_CLASSES classes, in training mode, and its anchors."""
    opts, _ = MODES[mode]
    cfg = load_config(
        CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.RETINANET.NUM_CLASSES", str(NUM_CLASSES), *opts]
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    return model, anchors_of(model)


def run_case(built, mode: str, seed: int):
    """None, or the failure of the case drawn from `seed` (an exception counts as one)."""
    model, anchors = built[mode]
    case = draw_case(random.Random(seed))
    try:
        problem = check_case(model, anchors, case, bfloat16=MODES[mode][1])
    except Exception as e:  # the campaign reports every failure, whatever its kind
        problem = f"{type(e).__name__}: {e}"
    return None if problem is None else (case, problem)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="in all, spread over the modes")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first case")
    parser.add_argument("--seed", type=int, help="run only the case of this seed (a reproducer)")
    args = parser.parse_args()

    # The cases are small: one thread runs them 10-30 times faster than two competing threads.
    torch.set_num_threads(1)
    built = {mode: build(mode) for mode in args.modes}
    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = range(args.first_seed, args.first_seed + -(-args.cases // len(args.modes)))
    counts = {mode: 0 for mode in args.modes}
    failures = []
    start = time.perf_counter()
    for seed in seeds:
        for mode in args.modes:
            failure = run_case(built, mode, seed)
            counts[mode] += 1
            if failure is not None:
                failures.append((mode, seed, *failure))
                print(f"FAIL {mode} seed {seed}: {failure[1]}", flush=True)
        done = sum(counts.values())
        if done % 600 < len(args.modes):
            elapsed = time.perf_counter() - start
            print(f"{done} cases, {elapsed:.0f} s ({done / elapsed:.1f} cases/s)", flush=True)

    elapsed = time.perf_counter() - start
    total = sum(counts.values())
    print(f"\n{'mode':<24}{'cases':>8}")
    for mode, count in counts.items():
        print(f"{mode:<24}{count:>8}")
    print(f"{'all':<24}{total:>8}   in {elapsed:.0f} s ({total / elapsed:.1f} cases/s)")
    print(f"{len(failures)} failure(s)")
    for mode, seed, case, problem in failures:
        print(f"\n{problem}\n  case: {case}")
        print(f"  reproduce: python bench/fuzz.py --modes {mode} --seed {seed}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
