"""The plain Detectron2 RetinaNet view of an LTM model (ltm_d2/deploy/retinanet_config.py,
tools/convert_to_retinanet.py), run by a Detectron2 process that never imports ltm_d2."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectron2.config import get_cfg

from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.deploy import NoPlainRetinaNetError, class_names, plain_retinanet_config
from ltm_d2.visualization import safe_predictor

from support import REPO, TINY_CONFIG, build_tiny_model, load_tool, tiny_cfg

IMAGE_SIZES = [(96, 128), (128, 72), (64, 64)]  # (H, W)


def convert(*argv):
    load_tool("tools/convert_to_retinanet.py").main([*map(str, argv)])


def value(cfg, key):
    """The value of a dotted key of a config."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def all_keys(node, prefix=""):
    """The dotted names of every leaf key of a config."""
    keys = set()
    for key, value in node.items():
        keys |= all_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the tiny LTM model, saved by our checkpointer, with a head that fires on
    many anchors (random weights otherwise: every detection differs in score and box)."""
    folder = tmp_path_factory.mktemp("weights")
    model = build_tiny_model(seed=3)
    model.head.cls_score.bias.data.fill_(1.0)
    SafeCheckpointer(model, save_dir=str(folder)).save("ltm_tiny")
    return str(folder / "ltm_tiny.pth")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for k, size in enumerate(IMAGE_SIZES):
        paths.append(str(folder / f"{k}.png"))
        cv2.imwrite(paths[-1], rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return paths


@pytest.mark.slow
def test_plain_detectron2_gives_exactly_the_detections_of_our_predictor(tmp_path, weights, images):
    plain_config = tmp_path / "plain.yaml"
    convert("--config-file", TINY_CONFIG, "--output", plain_config, "MODEL.WEIGHTS", weights)
    out = tmp_path / "plain_detections.pth"
    run_without_ltm_d2("plain_detectron2_predict.py", plain_config, out, *images, cwd=tmp_path)
    plain = torch.load(out, weights_only=True)
    assert plain["architecture"] == "RetinaNet" and plain["ltm_d2_modules"] == []
    assert plain["missing_keys"] == [] and plain["unexpected_keys"] == []

    predictor = safe_predictor(tiny_cfg("MODEL.WEIGHTS", weights))
    assert type(predictor.model).__name__ == "LTM"
    for path, (boxes, scores, classes) in zip(images, plain["detections"]):
        ours = predictor(cv2.imread(path))["instances"]
        assert len(ours) > 0
        assert torch.equal(ours.pred_boxes.tensor, boxes)
        assert torch.equal(ours.scores, scores)
        assert torch.equal(ours.pred_classes, classes)


def test_the_plain_config_has_only_detectron2_keys_and_our_inference_settings():
    cfg = tiny_cfg()
    plain = plain_retinanet_config(cfg)
    assert plain.MODEL.META_ARCHITECTURE == "RetinaNet"
    assert all_keys(plain) == all_keys(get_cfg())
    assert "MODEL.LTM.MATCHING" in all_keys(cfg) - all_keys(plain)
    for key in (
        "MODEL.ANCHOR_GENERATOR.SIZES",
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
        "MODEL.RETINANET.BBOX_REG_WEIGHTS",
        "MODEL.RETINANET.NMS_THRESH_TEST",
        "MODEL.RETINANET.SCORE_THRESH_TEST",
        "MODEL.RETINANET.TOPK_CANDIDATES_TEST",
        "INPUT.MIN_SIZE_TEST",
        "INPUT.MAX_SIZE_TEST",
        "MODEL.PIXEL_MEAN",
        "MODEL.PIXEL_STD",
        "MODEL.RESNETS.DEPTH",
        "MODEL.RESNETS.NORM",
        "MODEL.FPN.OUT_CHANNELS",
        "MODEL.BACKBONE.NAME",
        "TEST.DETECTIONS_PER_IMAGE",
    ):
        assert value(cfg, key) == value(plain, key), key


@pytest.mark.parametrize("matching", ["freeanchor", "topk"])
def test_every_matching_mode_has_the_same_plain_config(matching):
    plain = plain_retinanet_config(tiny_cfg("MODEL.LTM.MATCHING", matching))
    assert plain == plain_retinanet_config(tiny_cfg())


def test_ltm_af_is_refused_naming_its_linear_box_coder(tmp_path):
    config = os.path.join(REPO, "configs", "Shapes-Detection", "ltm_af_R_18_FPN_demo.yaml")
    with pytest.raises(
        SystemExit, match="LTMAF.*no plain RetinaNet equivalent.*Box2BoxTransformLinear"
    ):
        convert("--config-file", config, "--output", tmp_path / "plain.yaml")
    assert not (tmp_path / "plain.yaml").exists()


@pytest.mark.parametrize(
    "key, name",
    [
        ("MODEL.BACKBONE.NAME", "build_retinanet_resnet_fpn_p5_backbone"),
        ("MODEL.ANCHOR_GENERATOR.NAME", "RoundedRatioAnchorGenerator"),
    ],
)
def test_a_builder_registered_by_ltm_d2_is_refused_naming_the_key(key, name):
    with pytest.raises(NoPlainRetinaNetError, match=f"{key} '{name}' is registered by ltm_d2"):
        plain_retinanet_config(tiny_cfg(key, name))


def test_converting_a_config_without_weights_says_that_the_plain_config_names_none(
    tmp_path, capsys
):
    convert("--config-file", TINY_CONFIG, "--output", tmp_path / "plain.yaml", "MODEL.WEIGHTS", "")
    assert "the config has no MODEL.WEIGHTS" in capsys.readouterr().out
    convert(
        "--config-file", TINY_CONFIG, "--output", tmp_path / "plain.yaml", "MODEL.WEIGHTS", "w.pth"
    )
    assert "MODEL.WEIGHTS" not in capsys.readouterr().out


def run_without_ltm_d2(script, *argv, cwd):
    """Run tests/support/`script` with `argv` in a Python process that cannot import ltm_d2."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "support", script), *map(str, argv)],
        cwd=cwd,
        env=env,
        check=True,
    )


@pytest.mark.slow
def test_sahi_on_the_plain_config_predicts_exactly_as_our_predictor_and_names_the_classes(
    tmp_path, weights, images
):
    pytest.importorskip("sahi")
    plain_config = tmp_path / "plain.yaml"
    convert("--config-file", TINY_CONFIG, "--output", plain_config, "MODEL.WEIGHTS", weights)
    out = tmp_path / "sahi.pth"
    run_without_ltm_d2("sahi_predict.py", plain_config, out, 64, *images, cwd=tmp_path)
    sahi = torch.load(out, weights_only=True)
    assert sahi["ltm_d2_modules"] == []

    cfg = tiny_cfg("MODEL.WEIGHTS", weights)
    names = class_names(cfg)
    predictor = safe_predictor(cfg)
    for path, full, sliced in zip(images, sahi["full"], sahi["sliced"]):
        ours = predictor(cv2.imread(path))["instances"]
        assert len(ours) > 0
        assert torch.equal(full["boxes"], ours.pred_boxes.tensor)
        assert torch.equal(full["scores"], ours.scores)
        assert torch.equal(full["classes"], ours.pred_classes)
        assert full["names"] == [names[c] for c in ours.pred_classes]
        height, width = cv2.imread(path).shape[:2]
        assert len(sliced["boxes"]) > 0 and set(sliced["names"]) <= set(names)
        assert (sliced["boxes"] >= 0).all()
        assert (sliced["boxes"][:, [0, 2]] <= width).all()
        assert (sliced["boxes"][:, [1, 3]] <= height).all()


def test_the_plain_config_names_the_bundled_datasets_classes_in_a_line_to_copy(tmp_path):
    convert("--config-file", TINY_CONFIG, "--output", tmp_path / "plain.yaml")
    header = [line for line in open(tmp_path / "plain.yaml") if line.startswith("#")]
    names = class_names(tiny_cfg())
    assert names == ["disc", "square", "bar", "L-shape", "hook", "arrow"]
    line = f"#   MetadataCatalog.get('ltm_shapes_mini_train').set(thing_classes={names!r})\n"
    assert line in header
