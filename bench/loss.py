"""
The loss alone: forward + backward of the LTM loss ("ltm", "freeanchor", LTM-AF) against
Detectron2's RetinaNet loss (`label_anchors` + `losses`), on identical predictions of 2 images of
800x1216, 80 classes, P3-P7 (182,403 anchors per image; LTM-AF: 20,267 points), at several numbers
of objects per image; time and peak memory of each, their ratios to RetinaNet, and the scaling
with the number of objects (a least-squares slope and a PNG plot).

    python bench/loss.py [--objects 7 50 300 1000] [--repeats 5] [--quick] [--plot PATH]
                         [--json PATH]
"""

import argparse
import math
import os
import sys
from typing import Dict, List

import numpy as np
import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import (  # noqa: E402
    DEVICE,
    describe_device,
    interleaved_times,
    peak_memory,
    print_table,
    write_json,
)

from ltm_d2 import load_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = (800, 1216)
NUM_IMAGES = 2
STRIDES = (8, 16, 32, 64, 128)
# name: config of the detector whose loss is measured
DETECTORS = {
    "RetinaNet": "retinanet_R_50_FPN_1x.yaml",
    "LTM": "ltm_R_50_FPN_1x.yaml",
    "FreeAnchor": "freeanchor_R_50_FPN_1x.yaml",
    "LTM-AF": "ltm_af_R_50_FPN_1x.yaml",
}
BASELINE = "RetinaNet"


def build_detector(config_name: str, *opts):
    """A detector of a COCO config, randomly initialised, in training mode."""
    path = os.path.join(REPO, "configs", "COCO-Detection", config_name)
    cfg = load_config(path, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", DEVICE, *opts])
    model = build_model(cfg)
    model.train()
    return model


def random_instances(
    num_objects: int, generator: torch.Generator, image_size=IMAGE_SIZE
) -> Instances:
    """Boxes of log-uniform size 16-512 px and aspect ratio 1:2-2:1 inside the image, 80 classes."""
    height, width = image_size
    size = torch.exp(
        math.log(16) + torch.rand(num_objects, generator=generator) * math.log(512 / 16)
    )
    aspect = torch.exp((torch.rand(num_objects, generator=generator) - 0.5) * math.log(4))
    wh = torch.stack([size * aspect.sqrt(), size / aspect.sqrt()], dim=1)
    wh = torch.minimum(wh, torch.tensor([width - 1.0, height - 1.0]))
    xy = torch.rand(num_objects, 2, generator=generator) * (torch.tensor([width, height]) - wh)
    instances = Instances(image_size)
    instances.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1).to(DEVICE))
    instances.gt_classes = torch.randint(80, (num_objects,), generator=generator).to(DEVICE)
    return instances


def random_predictions(model, generator: torch.Generator):
    """
    Feature maps of P3-P7's shapes (no channels: only their sizes are used) and the head's
    outputs for them: logits around the prior, small deltas, both requiring gradients.
    """
    height, width = IMAGE_SIZE
    shapes = [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]
    features = [torch.empty(NUM_IMAGES, 0, h, w, device=DEVICE) for h, w in shapes]
    num_anchors = model.anchor_generator.num_anchors[0]
    logits = [
        (torch.randn(NUM_IMAGES, num_anchors * model.num_classes, h, w, generator=generator) - 4.0)
        for h, w in shapes
    ]
    deltas = [
        torch.randn(NUM_IMAGES, num_anchors * 4, h, w, generator=generator) * 0.5 for h, w in shapes
    ]
    predictions = [
        [x.to(DEVICE).requires_grad_(True) for x in logits],
        [x.to(DEVICE).requires_grad_(True) for x in deltas],
    ]
    return features, predictions


def loss_step(model, features, predictions, gt_instances):
    """One forward + backward of the detector's training loss on fixed predictions."""

    def step():
        for x in predictions[0] + predictions[1]:
            x.grad = None
        losses = model.forward_training(None, features, predictions, gt_instances)
        sum(losses.values()).backward()

    return step


def measure(num_objects: int, models: Dict, repeats: int):
    """Time (Timing) and peak memory (bytes) of every detector's loss step."""
    g = torch.Generator().manual_seed(num_objects)
    gt_instances = [random_instances(num_objects, g) for _ in range(NUM_IMAGES)]
    inputs = {}  # one set of predictions per anchor layout; RetinaNet, LTM, FreeAnchor share it
    steps = {}
    for name, model in models.items():
        layout = model.anchor_generator.num_anchors[0]
        if layout not in inputs:
            inputs[layout] = random_predictions(model, torch.Generator().manual_seed(0))
        features, predictions = inputs[layout]
        steps[name] = loss_step(model, features, predictions, gt_instances)
    memory = {name: peak_memory(step) for name, step in steps.items()}
    times = interleaved_times(steps, repeats=repeats)
    return times, memory


def fit_slope(x: List[float], y: List[float]) -> float:
    """Least-squares slope of y against x."""
    return float(np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)[0])


def plot_scaling(objects, times, memory, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_memory) = plt.subplots(1, 2, figsize=(11, 4))
    for name in times[0]:
        ax_time.plot(objects, [t[name].median * 1e3 for t in times], "o-", label=name)
        ax_memory.plot(objects, [m[name] / 2**20 for m in memory], "o-", label=name)
    ax_time.set(xlabel="objects per image", ylabel="loss forward+backward (ms, median)")
    ax_memory.set(xlabel="objects per image", ylabel="peak memory of the loss (MiB)")
    for ax in (ax_time, ax_memory):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"Loss alone, 2 images 800x1216, 80 classes, {describe_device()}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[7, 50, 300, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument("--plot", default=os.path.join(REPO, "output", "bench", "loss_scaling.png"))
    parser.add_argument("--quick", action="store_true", help="7 and 1000 objects, 3 runs")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.objects, args.repeats = [7, 1000], 3
    detectors = [BASELINE] + [d for d in args.detectors if d != BASELINE]
    models = {name: build_detector(DETECTORS[name]) for name in detectors}

    print(
        f"Loss alone (forward + backward), {NUM_IMAGES} images {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, "
        f"{describe_device()}, median of {args.repeats} runs after 1 warm-up"
    )
    all_times, all_memory, rows, records = [], [], [], []
    with EventStorage(0):
        for num_objects in args.objects:
            times, memory = measure(num_objects, models, args.repeats)
            all_times.append(times)
            all_memory.append(memory)
            for name in detectors:
                rows.append(
                    [
                        num_objects,
                        name,
                        f"{times[name].median * 1e3:.0f}",
                        times[name].spread(),
                        f"{times[name].median / times[BASELINE].median:.2f}",
                        f"{memory[name] / 2**20:.0f}",
                        f"{memory[name] / memory[BASELINE]:.2f}",
                    ]
                )
                print("  " + " | ".join(str(x) for x in rows[-1]), flush=True)
                records.append(
                    {
                        "objects": num_objects,
                        "loss": name,
                        "time_ms": times[name].median * 1e3,
                        "min_ms": min(times[name].times) * 1e3,
                        "max_ms": max(times[name].times) * 1e3,
                        "time_ratio": times[name].median / times[BASELINE].median,
                        "peak_mib": memory[name] / 2**20,
                        "peak_ratio": memory[name] / memory[BASELINE],
                    }
                )
    print_table(
        "Loss alone",
        [
            "objects/image",
            "loss",
            "time ms (median)",
            "min-max ms",
            "time / RetinaNet",
            "peak MiB",
            "peak / RetinaNet",
        ],
        rows,
    )
    if len(args.objects) > 1:
        slopes = [
            [
                name,
                f"{fit_slope(args.objects, [t[name].median * 1e3 for t in all_times]):.3f}",
                f"{fit_slope(args.objects, [m[name] / 2**20 for m in all_memory]):.3f}",
            ]
            for name in detectors
        ]
        print_table(
            f"Scaling with objects per image ({args.objects[0]}-{args.objects[-1]}), "
            "least-squares slope",
            ["loss", "ms per object", "MiB per object"],
            slopes,
        )
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        plot_scaling(args.objects, all_times, all_memory, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json:
        write_json(
            args.json,
            {
                "device": describe_device(),
                "repeats": args.repeats,
                "image_size": IMAGE_SIZE,
                "num_images": NUM_IMAGES,
                "rows": records,
            },
        )


if __name__ == "__main__":
    main()
