"""tools/publish_checkpoint.py on a one-iteration training run of the tiny config, then the
published file through DetectionCheckpointer, torch.load(weights_only=True) and the model zoo."""

import json
import os
import re

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser

from ltm_d2 import model_zoo

from support import TINY_CONFIG, build_tiny_model, load_tool

TINY = "Shapes-Detection/ltm_R_18_FPN_tiny.yaml"


publish_checkpoint = load_tool("tools/publish_checkpoint.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """OUTPUT_DIR of train_net.py after one training iteration and the final evaluation."""
    out = str(tmp_path_factory.mktemp("run"))
    args = default_argument_parser().parse_args(
        [
            "--config-file",
            TINY_CONFIG,
            "OUTPUT_DIR",
            out,
            "SOLVER.MAX_ITER",
            "1",
            "MODEL.DEVICE",
            "cpu",
            "SEED",
            "1",
        ]
    )
    load_tool("train_net.py").main(args)
    return out


def publish(capsys, *argv):
    """Run the tool; returns the path it published and the (URL, SHA-256) of its catalog line."""
    publish_checkpoint.main([*map(str, argv), "--name", TINY])
    printed = capsys.readouterr().out
    url, sha256 = re.search(
        r'PublishedCheckpoint\(\s*"([^"]+)",\s*"([0-9a-f]{64})",\s*\)', printed
    ).groups()
    path = re.search(r"^Published (\S+) ", printed, re.M).group(1)
    return path, url, sha256


def test_the_file_is_named_after_its_hash_and_holds_weights_config_and_final_metrics(
    run_dir, tmp_path, capsys
):
    path, url, sha256 = publish(capsys, run_dir, "--output", tmp_path)
    assert (
        os.path.basename(path) == f"model_final_{sha256[:6]}.pth"
        and model_zoo.sha256_of(path) == sha256
    )
    assert url == "file://" + path
    published = torch.load(path, map_location="cpu", weights_only=True)
    assert sorted(published) == ["__author__", "bbox_reg_weights", "config", "metrics", "model"]
    assert published["bbox_reg_weights"] == (10.0, 10.0, 5.0, 5.0)  # the tiny LTM config's
    trained = torch.load(
        os.path.join(run_dir, "model_final.pth"), map_location="cpu", weights_only=True
    )
    assert published["model"].keys() == trained["model"].keys()
    assert all(torch.equal(published["model"][k], v) for k, v in trained["model"].items())
    assert published["config"] == open(os.path.join(run_dir, "config.yaml")).read()
    last_eval = [
        json.loads(line)
        for line in open(os.path.join(run_dir, "metrics.json"))
        if "bbox/AP" in line
    ][-1]
    expected = {k: v for k, v in last_eval.items() if k.startswith("bbox/") or k == "iteration"}
    assert json.dumps(published["metrics"], sort_keys=True) == json.dumps(
        expected, sort_keys=True
    )  # NaN too


def test_fp16_halves_the_floating_point_weights(run_dir, tmp_path, capsys):
    path, _, _ = publish(capsys, run_dir, "--output", tmp_path, "--fp16")
    weights = torch.load(path, map_location="cpu", weights_only=True)["model"]
    floats = [v for v in weights.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    full, _, _ = publish(capsys, run_dir, "--output", tmp_path / "fp32")
    assert os.path.getsize(path) < 0.55 * os.path.getsize(full)


def test_detection_checkpointer_loads_the_published_weights(run_dir, tmp_path, capsys):
    path, _, _ = publish(capsys, run_dir, "--output", tmp_path)
    model = build_tiny_model(seed=7)
    DetectionCheckpointer(model).load(path)
    trained = torch.load(
        os.path.join(run_dir, "model_final.pth"), map_location="cpu", weights_only=True
    )["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())


def test_the_catalog_line_loads_the_model_through_the_model_zoo_with_its_hash_checked(
    run_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_zoo.model_zoo, "CATALOG", {})
    _, url, sha256 = publish(capsys, run_dir, "--output", tmp_path / "published", "--fp16")
    model_zoo.register_checkpoint(TINY, url, sha256)
    model = model_zoo.get(TINY, trained=True, device="cpu")
    trained = torch.load(
        os.path.join(run_dir, "model_final.pth"), map_location="cpu", weights_only=True
    )["model"]
    assert all(
        torch.equal(model.state_dict()[k], v.half().float())
        for k, v in trained.items()
        if v.is_floating_point()
    )

    model_zoo.register_checkpoint(TINY, url, "0" * 64)  # a catalog entry that names another file
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "other_cache"))
    with pytest.raises(model_zoo.ChecksumMismatchError, match=sha256):
        model_zoo.get(TINY, trained=True, device="cpu")


def test_a_run_without_metrics_is_refused_naming_the_missing_file(run_dir, tmp_path, capsys):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("model_final.pth", "config.yaml"):
        os.symlink(os.path.join(run_dir, name), incomplete / name)
    with pytest.raises(
        SystemExit, match=re.escape(str(incomplete / "metrics.json")) + " does not exist"
    ):
        publish_checkpoint.main([str(incomplete), "--name", TINY])


def test_a_malformed_metrics_file_is_refused_naming_the_line(run_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model_final.pth", "config.yaml"):
        os.symlink(os.path.join(run_dir, name), broken / name)
    (broken / "metrics.json").write_text('{"iteration": 0}\n{"bbox/AP": \n')
    with pytest.raises(SystemExit, match="metrics.json line 2 is not JSON"):
        publish_checkpoint.main([str(broken), "--name", TINY])


def test_an_ltm_run_gets_a_plain_retinanet_config_beside_the_weights(run_dir, tmp_path, capsys):
    path, _, _ = publish(capsys, run_dir, "--output", tmp_path)
    plain = get_cfg()
    plain.merge_from_file(path[: -len(".pth")] + ".retinanet.yaml", allow_unsafe=False)
    assert plain.MODEL.META_ARCHITECTURE == "RetinaNet" and plain.MODEL.WEIGHTS == path


def test_an_ltm_af_run_gets_no_plain_config_and_is_told_why(run_dir, tmp_path, capsys):
    ltm_af = tmp_path / "ltm_af"
    ltm_af.mkdir()
    for name in ("model_final.pth", "metrics.json"):
        os.symlink(os.path.join(run_dir, name), ltm_af / name)
    config = open(os.path.join(run_dir, "config.yaml")).read()
    (ltm_af / "config.yaml").write_text(
        config.replace("META_ARCHITECTURE: LTM\n", "META_ARCHITECTURE: LTMAF\n")
    )
    publish_checkpoint.main([str(ltm_af), "--output", str(tmp_path / "published"), "--name", TINY])
    assert (
        "No plain Detectron2 RetinaNet config: MODEL.META_ARCHITECTURE 'LTMAF'"
        in capsys.readouterr().out
    )
    assert [p.suffix for p in (tmp_path / "published").iterdir()] == [".pth"]
