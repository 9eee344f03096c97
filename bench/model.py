"""
A full training step (forward, backward, SGD) and inference of LTM against RetinaNet: same
backbone (R-50-FPN), same weights, same batch of images and objects.

    python bench/model.py [--size 512 768] [--objects 7] [--repeats 5] [--quick] [--json PATH]

On the CPU the default input is 2 images of 512x768 so that a step takes seconds; on a GPU pass
--size 800 1216.
"""

import argparse
import os
import sys

import torch

from detectron2.utils.events import EventStorage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loss import BASELINE, DETECTORS, build_detector, random_instances  # noqa: E402
from measure import describe_device, interleaved_times, print_table, write_json  # noqa: E402

NUM_IMAGES = 2
COMPARED = ["RetinaNet", "LTM"]


def batched_inputs(size, num_objects, with_instances=True):
    """NUM_IMAGES random images of `size` (H, W) with `num_objects` random objects each."""
    g = torch.Generator().manual_seed(0)
    inputs = []
    for _ in range(NUM_IMAGES):
        image = torch.randint(0, 256, (3, *size), generator=g).float()
        x = {"image": image, "height": size[0], "width": size[1]}
        if with_instances:
            x["instances"] = random_instances(num_objects, g, size)
        inputs.append(x)
    return inputs


def training_step(model, inputs):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        losses = model(inputs)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    return step


def inference(model, inputs):
    @torch.no_grad()
    def run():
        model(inputs)

    return run


def records(phase, times):
    """One dict per detector: median, min and max in ms, and the ratio of medians to RetinaNet."""
    base = times[BASELINE].median
    return [
        {
            "phase": phase,
            "detector": name,
            "median_ms": t.median * 1e3,
            "min_ms": min(t.times) * 1e3,
            "max_ms": max(t.times) * 1e3,
            "ratio": t.median / base,
        }
        for name, t in times.items()
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[512, 768], metavar=("H", "W"))
    parser.add_argument("--objects", type=int, default=7, help="objects per image")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3
    size = tuple(args.size)
    torch.manual_seed(0)
    models = {name: build_detector(DETECTORS[name]) for name in COMPARED}
    with torch.no_grad():  # scores of 0.5 send 1000 candidates per level through NMS
        models[BASELINE].head.cls_score.bias.zero_()
    weights = models[BASELINE].state_dict()
    for model in models.values():
        model.load_state_dict(weights)
    header = ["detector", "median ms", "min-max ms", "ratio to RetinaNet"]

    def rows(times):
        base = times[BASELINE].median
        return [
            [name, f"{t.median * 1e3:.0f}", t.spread(), f"{t.median / base:.3f}"]
            for name, t in times.items()
        ]

    where = (
        f"{NUM_IMAGES} images {size[0]}x{size[1]}, R-50-FPN, {describe_device()}, "
        f"median of {args.repeats} runs after 1 warm-up, taken in turns"
    )
    train_inputs = batched_inputs(size, args.objects)
    with EventStorage(0):
        for model in models.values():
            model.train()
        train = interleaved_times(
            {name: training_step(m, train_inputs) for name, m in models.items()}, args.repeats
        )
    print_table(
        f"Training step (forward, backward, SGD), {args.objects} objects per image, {where}",
        header,
        rows(train),
    )

    for name, model in models.items():  # the same weights again: training changed them
        model.load_state_dict(weights)
        model.eval()
    test_inputs = batched_inputs(size, 0, with_instances=False)
    infer = interleaved_times(
        {name: inference(m, test_inputs) for name, m in models.items()}, args.repeats
    )
    print_table(f"Inference, {where}", header, rows(infer))
    if args.json:
        measured = records("training step", train) + records("inference", infer)
        write_json(args.json, {"device": describe_device(), "where": where, "rows": measured})


if __name__ == "__main__":
    main()
