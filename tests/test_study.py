"""tools/study.py: the runs it plans, the tables it writes, and resuming where it stopped."""

import json
import os
import subprocess
import sys

import pytest
import torch

from dev.study import (
    DETECTORS,
    PRESETS,
    StudyRunner,
    ablation_table,
    main_table,
    mean_and_spread,
    plan_study,
    train_command,
)
from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.config import load_config

from support import REPO, TINY_CONFIG, train_net_arguments


def merged_config(run):
    return load_config(run.config_file, run.opts)


def bag(cfg):
    """K, S and beta of a merged config."""
    return cfg.MODEL.LTM.BAG_SIZE, cfg.MODEL.LTM.BAG_SAMPLE, cfg.MODEL.LTM.BBOX_REG_WEIGHT


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_detectors_share_backbone_schedule_inputs_and_evaluation(preset):
    study = plan_study(PRESETS[preset], tables=("main",))
    configs = {name: merged_config(run) for name, run in study.runs.items()}
    shared = (
        "MODEL.BACKBONE",
        "MODEL.RESNETS",
        "MODEL.FPN",
        "MODEL.ANCHOR_GENERATOR",
        "INPUT",
        "SOLVER.IMS_PER_BATCH",
        "SOLVER.MAX_ITER",
        "SOLVER.STEPS",
        "SOLVER.WARMUP_ITERS",
        "DATASETS",
        "MODEL.PIXEL_MEAN",
        "MODEL.PIXEL_STD",
        "TEST.NMS_RECALL",
    )
    reference = configs["ltm_seed1"]
    for name, cfg in configs.items():
        for key in shared:
            node_a, node_b = cfg, reference
            for part in key.split("."):
                node_a, node_b = node_a[part], node_b[part]
            assert node_a == node_b, f"{name} differs from ltm_seed1 in {key}"
    assert {cfg.SEED for cfg in configs.values()} == set(PRESETS[preset].seeds)
    assert configs["retinanet_seed1"].MODEL.META_ARCHITECTURE == "RetinaNet"
    assert configs["ltm_af_seed2"].MODEL.META_ARCHITECTURE == "LTMAF"
    assert [configs[f"{k}_seed1"].MODEL.LTM.MATCHING for k in ("topk", "freeanchor", "ltm")] == [
        "topk",
        "freeanchor",
        "ltm",
    ]


def test_every_seed_trains_every_detector_before_the_next_seed():
    names = list(plan_study(PRESETS["cpu"], tables=("main",)).runs)
    assert names == [f"{k}_seed{s}" for s in (1, 2) for k in DETECTORS]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_ablation_rows_are_labelled_with_the_bag_their_run_trains_with(preset):
    # The presets' LTM configs have bags of their own (K = 15 in "gpu"): every row, and above all
    # the one that reuses the main table's run, says what its run's merged config holds.
    study = plan_study(PRESETS[preset])
    for table, k, s, beta, name in study.ablation_rows:
        assert bag(merged_config(study.runs[name])) == (k, s, beta), f"{table}: {name}"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_ablations_vary_one_setting_of_the_main_ltm_run_and_reuse_it(preset):
    study = plan_study(PRESETS[preset])
    main = bag(load_config(PRESETS[preset].configs["ltm"]))
    k, s, beta = main
    rows = {}
    for table, *row_bag, name in study.ablation_rows:
        rows.setdefault(table, []).append((tuple(row_bag), name))
    for table, table_rows in rows.items():  # the main run, once in each table, and no other run
        assert [name for b, name in table_rows if b == main] == ["ltm_seed1"], table
        assert "ltm_seed1" not in [name for b, name in table_rows if b != main], table
    assert study.runs["ltm_seed1"] == plan_study(PRESETS[preset], ("main",)).runs["ltm_seed1"]
    sizes = [b for b, _ in rows["Table 5: bag size K"]]
    assert sizes == [(size, s, beta) for size in sorted({5, 10, 20, 40, k})]
    betas = [b for b, _ in rows["Table 5: beta of Eq. 4"]]
    assert betas == [(k, s, b) for b in sorted({0.3, 0.5, 0.7, beta})]
    assert [b for b, _ in rows["Table 3: S of K anchors"]] == [
        main,
        (2 * k, k, beta),
        (4 * k, k, beta),
    ]
    new_bags = {b for b, _ in sum(rows.values(), [])} - {main}
    assert len(study.runs) == 10 + len(new_bags)  # 5 detectors x 2 seeds, one run per new bag


def test_tuning_split_replaces_val_in_every_run():
    preset = PRESETS["cpu"]
    study = plan_study(preset, dataset=preset.tune_dataset)
    assert {merged_config(run).DATASETS.TEST for run in study.runs.values()} == {
        (preset.tune_dataset,)
    }


def test_mean_and_spread_is_half_the_range():
    assert mean_and_spread([20.0, 24.0, 22.0]) == (22.0, 2.0)


def fake_result(ap, dense=10.0):
    return {
        "AP": ap,
        "AP50": 2 * ap,
        "AP75": ap / 2,
        "sparse": ap + 1,
        "medium": ap,
        "dense": dense,
        "NR": 70.0,
        "NR50": 90.0,
        "NR90": 40.0,
    }


def test_main_table_pairs_the_gain_over_the_baseline_by_seed():
    study = plan_study(PRESETS["cpu"], tables=("main",), detectors=("retinanet", "ltm"))
    results = {
        "retinanet_seed1": fake_result(10.0),
        "retinanet_seed2": fake_result(14.0),
        "ltm_seed1": fake_result(13.0),
        "ltm_seed2": fake_result(15.0),
    }
    table = main_table(study, results)
    # LTM: AP 14.0 ± 1.0; gains +3 and +1 paired by seed -> +2.0 ± 1.0 (not 14 - 12 ± 2).
    assert "| LTM | 2 | 14.0 ± 1.0 | +2.0 ± 1.0 | 28.0 ± 2.0 |" in table
    assert "| RetinaNet | 2 | 12.0 ± 2.0 | — |" in table


def test_tables_show_unfinished_runs_as_dashes():
    study = plan_study(PRESETS["cpu"], detectors=("retinanet", "ltm"))
    table = main_table(study, {"ltm_seed1": fake_result(13.0)})
    assert "| LTM | 1 | 13.0 | — |" in table and "| RetinaNet | 0 | — |" in table
    assert "| Table 5: bag size K | 10 | K | 0.5 | — | — | — | — |" in ablation_table(study, {})


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    study = plan_study(PRESETS["cpu"], tables=("main",), seeds=(1,), detectors=("ltm",))
    runner = StudyRunner(study, REPO, str(tmp_path), PRESETS["cpu"].val_dataset)
    run, run_dir = study.runs["ltm_seed1"], runner.run_dir("ltm_seed1")
    assert runner.command("ltm_seed1") == train_command(run, REPO, run_dir, resume=False)

    os.makedirs(
        run_dir
    )  # what an interrupted attempt leaves: a checkpoint, named in last_checkpoint
    (tmp_path / "ltm_seed1" / "last_checkpoint").write_text("model_0000199.pth")
    command = runner.command("ltm_seed1")
    assert command == train_command(run, REPO, run_dir, resume=True)
    args = train_net_arguments().parse_args(command[2:])
    assert args.resume and args.config_file == run.config_file
    assert args.opts == ["OUTPUT_DIR", run_dir, *run.opts]  # the same run, in the same folder
    # train_net.py --resume continues from the checkpoint that last_checkpoint of OUTPUT_DIR names.
    checkpointer = SafeCheckpointer(torch.nn.Module(), save_dir=args.opts[1])
    assert checkpointer.get_checkpoint_file() == os.path.join(run_dir, "model_0000199.pth")


def run_study(tmp_path, *args):
    """tools/study.py with a "tiny" preset: the tiny config for every detector kind, 2 iterations,
    every candidate kept (so that even an untrained model detects something)."""
    configs = {"ltm": TINY_CONFIG}
    for kind, architecture in (("retinanet", "RetinaNet"), ("ltm_af", "LTMAF")):
        path = tmp_path / f"{kind}.yaml"
        path.write_text(f'_BASE_: "{TINY_CONFIG}"\nMODEL:\n  META_ARCHITECTURE: "{architecture}"\n')
        configs[kind] = str(path)
    script = (
        "import runpy; from dev.study import PRESETS, Preset; "
        f"PRESETS['tiny'] = Preset(configs={configs!r}, val_dataset='ltm_shapes_mini_val', "
        "tune_dataset='ltm_shapes_mini_train', opts=("
        "'SOLVER.MAX_ITER', '2', 'MODEL.RETINANET.SCORE_THRESH_TEST', '0.0'), seeds=(1,)); "
        "runpy.run_path('tools/study.py', run_name='__main__')"
    )
    return subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "--preset",
            "tiny",
            "--output-dir",
            str(tmp_path / "study"),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_study_trains_evaluates_reports_and_redoes_only_unfinished_runs(tmp_path):
    args = ("--detectors", "retinanet", "ltm", "--tables", "main")
    first = run_study(tmp_path, *args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for name in ("retinanet_seed1", "ltm_seed1"):
        result = json.load(open(tmp_path / "study" / name / "study_result.json"))
        assert {"AP", "sparse", "medium", "dense", "NR", "NR50"} <= set(result)
    report = (tmp_path / "study" / "results.md").read_text()
    assert "| LTM | 1 |" in report and "| RetinaNet | 1 |" in report and report in first.stdout
    assert (tmp_path / "study" / "crowdedness.png").stat().st_size > 0

    (tmp_path / "study" / "results.md").unlink()
    (tmp_path / "study" / "ltm_seed1" / "study_result.json").unlink()
    partial = run_study(tmp_path, *args, "--report-only")
    assert partial.returncode == 0 and "start " not in partial.stderr + partial.stdout
    assert "| LTM | 0 |" in (tmp_path / "study" / "results.md").read_text()

    second = run_study(tmp_path, *args)
    assert second.returncode == 0
    assert "2 runs (1 to train)" in second.stderr + second.stdout
    assert "start ltm_seed1" in second.stderr + second.stdout
    assert "start retinanet_seed1" not in second.stderr + second.stdout
    third = run_study(tmp_path, *args)
    assert (
        "2 runs (0 to train)" in third.stderr + third.stdout
        and "start " not in third.stderr + third.stdout
    )


@pytest.mark.slow
def test_a_failing_run_is_named_and_the_study_exits_nonzero(tmp_path):
    result = run_study(tmp_path, "--detectors", "ltm", "--tables", "main", "--seeds", "1")
    assert result.returncode == 0
    (tmp_path / "study" / "ltm_seed1" / "study_result.json").unlink()
    (tmp_path / "study" / "ltm_seed1" / "last_checkpoint").write_text("no_such_checkpoint.pth")
    result = run_study(tmp_path, "--detectors", "ltm", "--tables", "main", "--seeds", "1")
    assert result.returncode == 1
    assert "ltm_seed1 failed" in result.stderr + result.stdout
