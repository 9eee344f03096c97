"""
The paper's Tables 1, 2, 3 and 5 in miniature (tools/study.py): detectors trained identically on
the bundled dataset, each run by `train_net.py` in its own folder, then compared.

A run is finished once its folder holds `study_result.json`; an unfinished one resumes from its
last checkpoint. Tables report the mean over seeds and half the spread, (max - min) / 2.
"""

import json
import logging
import os
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dev.report import markdown_table
from ltm_d2.analysis.crowdedness import (
    CROWDEDNESS_GROUPS,
    ap_on_image_groups,
    group_images,
    relative_improvement,
)
from ltm_d2.config import load_config
from ltm_d2.evaluation.coco_ap import average_precision, coco_ground_truth, evaluate_boxes

logger = logging.getLogger(__name__)

RESULT_FILE = "study_result.json"

# The detectors of the main table: label, and the name of the config of its own recipe in a
# preset, SHAPES_CONFIGS/{name}_{suffix}.yaml (docs/recipes.md).
DETECTORS = OrderedDict(
    retinanet=("RetinaNet", "retinanet"),
    topk=("RetinaNet (K anchors)", "retinanet_topk"),
    freeanchor=("LTM(M+)", "freeanchor"),
    ltm=("LTM", "ltm"),
    ltm_af=("LTM-AF", "ltm_af"),
)
BASELINE = "retinanet"

# The ablations of LTM (one seed) change one setting of the main table's LTM run, whose bag
# (K, S, beta) is read from its config (K fitted to the tuning split, beta of the paper): Table 5
# tries these bag sizes K and betas of Eq. 4 besides its own; Table 3 keeps S at its K and grows
# the bag S is drawn from by these factors, as the paper's 40 of 40, 80, 120, 160 do.
# S = 0 keeps all K anchors of a bag.
ABLATION_BAG_SIZES = (5, 10, 20, 40)
ABLATION_BETAS = (0.3, 0.5, 0.7)
ABLATION_BAG_GROWTH = (2, 4)


@dataclass(frozen=True)
class Preset:
    """What every run of a study shares: the config file of each kind of detector (an absolute
    path), the splits, overrides."""

    configs: Dict[str, str]
    val_dataset: str
    tune_dataset: str
    opts: Tuple[str, ...]
    seeds: Tuple[int, ...] = (1, 2)


# The configs of the checkout this module is part of.
SHAPES_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "Shapes-Detection"
)


def _shapes_configs(suffix: str) -> Dict[str, str]:
    return {
        key: os.path.join(SHAPES_CONFIGS, f"{name}_{suffix}.yaml")
        for key, (_, name) in DETECTORS.items()
    }


PRESETS = {
    # The demo's data, network, inputs, anchors, bag size and schedule (R-18, 128 px; the configs
    # ltm_R_18_FPN_demo.yaml and its siblings), on a 2-core CPU.
    "cpu": Preset(
        configs=_shapes_configs("R_18_FPN_demo"),
        val_dataset="ltm_shapes_small_val",
        tune_dataset="ltm_shapes_small_tune",
        opts=("SOLVER.CHECKPOINT_PERIOD", "200"),
    ),
    # One GPU: R-50, the 256 px splits, 4000 iterations (the *_R_50_FPN_256.yaml configs).
    "gpu": Preset(
        configs=_shapes_configs("R_50_FPN_256"),
        val_dataset="ltm_shapes_val",
        tune_dataset="ltm_shapes_tune",
        opts=("SOLVER.CHECKPOINT_PERIOD", "500"),
    ),
}


@dataclass(frozen=True)
class StudyRun:
    """One training: `train_net.py --config-file config_file` with the overrides `opts`; the
    path of the config is absolute, so that planning and training read the same file."""

    name: str
    config_file: str
    opts: Tuple[str, ...]


@dataclass
class Study:
    """The runs of a study and, for each table row, the runs it averages."""

    runs: "OrderedDict[str, StudyRun]" = field(default_factory=OrderedDict)
    main_rows: "OrderedDict[str, Dict[int, str]]" = field(
        default_factory=OrderedDict
    )  # label -> seed -> run
    ablation_rows: List[Tuple[str, int, int, float, str]] = field(default_factory=list)

    def add(self, run: StudyRun) -> str:
        self.runs.setdefault(run.name, run)
        return run.name


Bag = Tuple[int, int, float]  # K, S, beta: MODEL.LTM.BAG_SIZE, BAG_SAMPLE, BBOX_REG_WEIGHT


def bag_of(run: StudyRun) -> Bag:
    """K, S and beta of `run`, from its merged config: what it really trains with."""
    ltm = load_config(run.config_file, run.opts).MODEL.LTM
    return ltm.BAG_SIZE, ltm.BAG_SAMPLE, ltm.BBOX_REG_WEIGHT


def ablation_bags(main: Bag) -> List[Tuple[str, Bag]]:
    """(table, bag) of each row of the ablation table around the bag `main`, which each table
    holds once, in order."""
    k, s, beta = main
    rows = [("Table 5: bag size K", (size, s, beta)) for size in sorted({*ABLATION_BAG_SIZES, k})]
    rows += [("Table 5: beta of Eq. 4", (k, s, b)) for b in sorted({*ABLATION_BETAS, beta})]
    rows += [("Table 3: S of K anchors", main)]
    rows += [("Table 3: S of K anchors", (g * k, k, beta)) for g in ABLATION_BAG_GROWTH]
    return rows


def plan_study(
    preset: Preset,
    tables: Sequence[str] = ("main", "ablation"),
    seeds: Optional[Sequence[int]] = None,
    dataset: Optional[str] = None,
    detectors: Sequence[str] = tuple(DETECTORS),
) -> Study:
    """
    The runs of the study: the main table (the `detectors`, keys of DETECTORS, every seed, seed
    by seed so that a partial study already compares all detectors) and the ablation table (LTM,
    the first seed, around the bag of the main table's LTM run). Every run is evaluated on
    `dataset` (default: the preset's val split). Each ablation row is labelled with K, S and beta
    read from the merged config of its run, the main table's run for the row with its own bag.
    """
    seeds = tuple(seeds or preset.seeds)
    common = (
        *preset.opts,
        "DATASETS.TEST",
        f"('{dataset or preset.val_dataset}',)",
        "TEST.NMS_RECALL",
        "True",
    )
    study = Study()
    if "main" in tables:
        for seed in seeds:
            for key in detectors:
                run = StudyRun(
                    f"{key}_seed{seed}", preset.configs[key], (*common, "SEED", str(seed))
                )
                study.main_rows.setdefault(DETECTORS[key][0], {})[seed] = study.add(run)
    if "ablation" in tables:
        seed = seeds[0]
        main = StudyRun(f"ltm_seed{seed}", preset.configs["ltm"], (*common, "SEED", str(seed)))
        main_bag = bag_of(main)
        for table, bag in ablation_bags(main_bag):
            run = main  # the main table's LTM run
            if bag != main_bag:
                k, s, beta = bag
                name = f"ltm_K{k}" + (f"_S{s}" if s else "") + f"_beta{beta}_seed{seed}"
                keys = ("MODEL.LTM.BAG_SIZE", "MODEL.LTM.BAG_SAMPLE", "MODEL.LTM.BBOX_REG_WEIGHT")
                overrides = [str(x) for pair in zip(keys, bag) for x in pair]
                run = StudyRun(name, main.config_file, (*main.opts, *overrides))
            study.ablation_rows.append((table, *bag_of(run), study.add(run)))
    return study


def train_command(run: StudyRun, repo: str, output_dir: str, resume: bool) -> List[str]:
    """The command line of a run: the `train_net.py` of the checkout `repo`."""
    command = [sys.executable, os.path.join(repo, "train_net.py"), "--config-file", run.config_file]
    if resume:
        command.append("--resume")
    return command + ["OUTPUT_DIR", output_dir, *run.opts]


def run_result(run_dir: str, dataset: str) -> Dict[str, float]:
    """
    The figures of a trained run from what its evaluation wrote: COCO AP, AP on each crowdedness
    group (Table 2), NMS recall (Table 4).
    """
    inference = os.path.join(run_dir, "inference")
    with open(os.path.join(inference, "coco_instances_results.json")) as f:
        detections = json.load(f)
    if detections:
        coco_gt = coco_ground_truth(dataset, inference)
        coco_eval = evaluate_boxes(coco_gt, detections)
        result = {
            "AP": average_precision(coco_eval),
            "AP50": 100.0 * float(coco_eval.stats[1]),
            "AP75": 100.0 * float(coco_eval.stats[2]),
        }
        result.update(ap_on_image_groups(coco_gt, detections, group_images(coco_gt)))
    else:  # a detector that finds nothing
        result = dict.fromkeys(("AP", "AP50", "AP75", *CROWDEDNESS_GROUPS), 0.0)
    with open(os.path.join(inference, "nms_recall.json")) as f:
        result.update(json.load(f))
    return result


def _format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class StudyRunner:
    """
    Trains the unfinished runs of a study with the `train_net.py` and configs of the checkout
    `repo`, `jobs` at a time (each on its share of this process's CPU cores), and writes each
    one's `study_result.json` as it finishes.
    """

    def __init__(self, study: Study, repo: str, output_dir: str, dataset: str, jobs: int = 1):
        self.study, self.repo, self.output_dir = study, repo, output_dir
        self.dataset, self.jobs = dataset, jobs

    def run_dir(self, name: str) -> str:
        return os.path.join(self.output_dir, name)

    def result(self, name: str) -> Optional[Dict[str, float]]:
        path = os.path.join(self.run_dir(name), RESULT_FILE)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def pending(self) -> List[str]:
        return [name for name in self.study.runs if self.result(name) is None]

    def _core_sets(self) -> List[set]:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cores) < self.jobs:
            return [set(cores)] * self.jobs
        return [set(cores[i :: self.jobs]) for i in range(self.jobs)]

    def command(self, name: str) -> List[str]:
        """The command that trains run `name` in its folder: with `--resume` once an earlier
        attempt left a checkpoint there, which train_net.py then continues from."""
        run_dir = self.run_dir(name)
        resume = os.path.isfile(os.path.join(run_dir, "last_checkpoint"))
        return train_command(self.study.runs[name], self.repo, run_dir, resume)

    def _start(self, name: str, cores: set) -> subprocess.Popen:
        run_dir = self.run_dir(name)
        os.makedirs(run_dir, exist_ok=True)
        command = self.command(name)
        preexec = (lambda: os.sched_setaffinity(0, cores)) if cores else None
        with open(os.path.join(run_dir, "study_train.log"), "a") as log:
            log.write(" ".join(command) + "\n")
            log.flush()
            return subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.repo, preexec_fn=preexec
            )

    def _finish(self, name: str, seconds: float) -> Dict[str, float]:
        result = run_result(self.run_dir(name), self.dataset)
        result["train_and_eval_seconds"] = seconds
        path = os.path.join(self.run_dir(name), RESULT_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(path + ".tmp", path)
        return result

    def run(self) -> List[str]:
        """Train every unfinished run; returns the names of those that failed."""
        pending = self.pending()
        total, done, failed = len(pending), 0, []
        if total < len(self.study.runs):
            logger.info(
                f"{len(self.study.runs) - total} runs already finished in {self.output_dir}"
            )
        free = self._core_sets()
        active: Dict[str, Tuple[subprocess.Popen, set, float]] = {}
        started, durations = time.perf_counter(), []
        while pending or active:
            while pending and free:
                name, cores = pending.pop(0), free.pop(0)
                logger.info(f"start {name}: log in {self.run_dir(name)}/study_train.log")
                active[name] = (self._start(name, cores), cores, time.perf_counter())
            time.sleep(1.0)
            for name, (process, cores, start) in list(active.items()):
                if process.poll() is None:
                    continue
                del active[name]
                free.append(cores)
                done += 1
                seconds = time.perf_counter() - start
                if process.returncode != 0:
                    failed.append(name)
                    logger.error(
                        f"[{done}/{total}] {name} failed (exit {process.returncode}); "
                        f"see {self.run_dir(name)}/study_train.log"
                    )
                    continue
                durations.append(seconds)
                ap = self._finish(name, seconds)["AP"]
                eta = np.mean(durations) * (total - done) / self.jobs
                logger.info(
                    f"[{done}/{total}] {name}: AP {ap:.1f} in {_format_duration(seconds)}; "
                    f"elapsed {_format_duration(time.perf_counter() - started)}, "
                    f"ETA {_format_duration(eta)}"
                )
        return failed


def mean_and_spread(values: Sequence[float]) -> Tuple[float, float]:
    """The mean of `values` and half their spread, (max - min) / 2."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float((values.max() - values.min()) / 2)


def _cell(values: Sequence[float], signed: bool = False) -> str:
    if len(values) == 0:
        return "—"
    mean, spread = mean_and_spread(values)
    sign = "+" if signed else ""
    return f"{mean:{sign}.1f}" + (f" ± {spread:.1f}" if len(values) > 1 else "")


def _finished(study: Study, results, label: str) -> List[Tuple[int, Dict[str, float]]]:
    """(seed, result) of each finished run of a main-table detector."""
    return [
        (seed, results[name]) for seed, name in study.main_rows[label].items() if results.get(name)
    ]


def _paired_with_baseline(study: Study, results, label: str) -> List[Tuple[Dict, Dict]]:
    """(result, baseline result of the same seed) for each seed where both runs are finished."""
    label_of_baseline = DETECTORS[BASELINE][0]
    baseline = (
        dict(_finished(study, results, label_of_baseline))
        if label_of_baseline in study.main_rows
        else {}
    )
    return [(r, baseline[seed]) for seed, r in _finished(study, results, label) if seed in baseline]


MAIN_COLUMNS = ("AP", "AP50", "AP75", *CROWDEDNESS_GROUPS, "NR", "NR50", "NR90")


def main_table(study: Study, results: Dict[str, Dict[str, float]]) -> str:
    """
    Tables 1, 2 and 4 in one: per detector, the mean ± half-spread over seeds of AP, AP on each
    crowdedness group and NMS recall; the AP gain over the baseline is paired by seed.
    """
    baseline = DETECTORS[BASELINE][0]
    header = [
        "detector",
        "seeds",
        "AP",
        f"ΔAP vs {baseline}",
        *[f"AP {c}" if c in CROWDEDNESS_GROUPS else c for c in MAIN_COLUMNS[1:]],
    ]
    rows = []
    for label in study.main_rows:
        finished = [r for _, r in _finished(study, results, label)]
        gains = [r["AP"] - b["AP"] for r, b in _paired_with_baseline(study, results, label)]
        cells = [
            label,
            str(len(finished)),
            _cell([r["AP"] for r in finished]),
            "—" if label == baseline else _cell(gains, signed=True),
        ]
        cells += [_cell([r[c] for r in finished]) for c in MAIN_COLUMNS[1:]]
        rows.append(cells)
    return markdown_table(header, rows)


def crowdedness_gain_table(study: Study, results: Dict[str, Dict[str, float]]) -> str:
    """Table 2's relative improvement over the baseline on each crowdedness group, paired by
    seed."""
    baseline = DETECTORS[BASELINE][0]
    groups = list(CROWDEDNESS_GROUPS)
    rows = []
    for label in study.main_rows:
        if label == baseline:
            continue
        pairs = _paired_with_baseline(study, results, label)
        cells = [
            _cell([relative_improvement(b[g], r[g]) for r, b in pairs], signed=True)
            + ("%" if pairs else "")
            for g in groups
        ]
        rows.append([label, *cells])
    return markdown_table(["detector", *(f"{g} (vs {baseline})" for g in groups)], rows)


def ablation_table(study: Study, results: Dict[str, Dict[str, float]]) -> str:
    """Tables 3 and 5 in miniature: LTM's AP, AP50 and NR for each bag size K, S of K, and beta."""
    rows = []
    for table, k, s, beta, name in study.ablation_rows:
        r = results.get(name)
        figures = [f"{r[c]:.1f}" for c in ("AP", "AP50", "dense", "NR")] if r else ["—"] * 4
        rows.append([table, str(k), str(s or "K"), str(beta), *figures])
    header = ["ablation", "K", "S", "β", "AP", "AP50", "AP dense", "NR"]
    return markdown_table(header, rows)


def plot_crowdedness(path: str, study: Study, results: Dict[str, Dict[str, float]]) -> None:
    """AP of each detector on each crowdedness group, bars at the mean, whiskers at min and max."""
    figure = Figure(figsize=(7.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    groups = ["AP", *CROWDEDNESS_GROUPS]
    width = 0.8 / max(1, len(study.main_rows))
    for i, label in enumerate(study.main_rows):
        finished = [r for _, r in _finished(study, results, label)]
        if not finished:
            continue
        values = np.array([[r[g] for g in groups] for r in finished])  # (seeds, groups)
        mean = values.mean(axis=0)
        x = np.arange(len(groups)) + (i - (len(study.main_rows) - 1) / 2) * width
        ax.bar(
            x,
            mean,
            width,
            label=label,
            yerr=[mean - values.min(axis=0), values.max(axis=0) - mean],
            capsize=2,
        )
    ax.set_xticks(
        np.arange(len(groups)), ["all images", *[f"{g} images" for g in CROWDEDNESS_GROUPS]]
    )
    ax.set_ylabel("AP (%)")
    ax.set_title("AP by crowdedness (mean over seeds; whiskers: min and max)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def write_report(study: Study, runner: StudyRunner, header: str) -> str:
    """Write results.md and crowdedness.png into the study's folder; returns the Markdown."""
    results = {name: runner.result(name) for name in study.runs}
    parts = [header]
    if study.main_rows:
        parts += [
            "## Detectors (Tables 1, 2, 4)",
            main_table(study, results),
            "### Relative AP gain by crowdedness (Table 2)",
            crowdedness_gain_table(study, results),
        ]
        plot_crowdedness(os.path.join(runner.output_dir, "crowdedness.png"), study, results)
    if study.ablation_rows:
        parts += ["## LTM ablations (Tables 3, 5)", ablation_table(study, results)]
    markdown = "\n\n".join(parts) + "\n"
    with open(os.path.join(runner.output_dir, "results.md"), "w") as f:
        f.write(markdown)
    return markdown
