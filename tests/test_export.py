"""tools/export_model.py and ltm_d2/deploy/export.py: TorchScript and ONNX exports of LTM and
LTM-AF on the tiny config, each checked against the eager model on inputs of other sizes."""
import re

import cv2
import numpy as np
import pytest
import torch
import torchvision

from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.deploy.export import (
    EXACT,
    check_export,
    export_tracing,
    network_input,
    traced_batched_nms,
    traced_runner,
)

from support import TINY_CONFIG, build_tiny_model, load_tool, tiny_cfg

ARCHITECTURES = {"LTM": [], "LTMAF": ["MODEL.META_ARCHITECTURE", "LTMAF"]}


def spread_model(*opts):
    """The tiny model with a classifier whose scores differ from place to place by far more than
    float32 rounding: at initialisation every score is about the prior probability, and ONNX's
    rounding differences (1e-7) would reorder near ties."""
    model = build_tiny_model(*opts, seed=1).eval()
    torch.nn.init.normal_(model.head.cls_score.weight, std=0.05)
    torch.nn.init.zeros_(model.head.cls_score.bias)
    return model


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def weights(request, tmp_path_factory):
    """(architecture, its checkpoint with spread scores)."""
    folder = tmp_path_factory.mktemp("weights")
    SafeCheckpointer(spread_model(*ARCHITECTURES[request.param]), save_dir=str(folder)).save("model")
    return request.param, str(folder / "model.pth")


@pytest.fixture(scope="module")
def sample_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "sample.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return str(path)


def export(tmp_path, capsys, sample_image, weights, *args):
    """Run the tool on the model of `weights`; returns its exit code and the rows of its table."""
    architecture, path = weights
    code = load_tool("tools/export_model.py").main(
        ["--config-file", TINY_CONFIG, "--output", str(tmp_path / "exported"), "--sample-image", sample_image,
         *args, *ARCHITECTURES[architecture], "MODEL.WEIGHTS", path, "MODEL.DEVICE", "cpu",
         "TEST.DETECTIONS_PER_IMAGE", "50"]
    )
    printed = capsys.readouterr().out
    print(printed)
    rows = re.findall(r"^\s+(\d+)x(\d+)( \(traced\))?\s+(\d+)/(\d+)\s+(\S+)\s+(\S+)\s+(\w+)", printed, re.M)
    return code, rows


def assert_checked_on_other_sizes(rows, traced=True):
    sizes = {(h, w) for h, w, *_ in rows}
    assert len(rows) == 3 and len(sizes) == 3
    assert [r[2] != "" for r in rows] == ([True, False, False] if traced else [False] * 3)
    assert all(eager == exported == "50" for *_, eager, exported, _, _, _ in rows)


def test_traced_torchscript_equals_the_eager_model_bitwise_on_other_sizes(
    weights, tmp_path, capsys, sample_image
):
    code, rows = export(tmp_path, capsys, sample_image, weights)
    assert code == 0 and (tmp_path / "exported" / "model.ts").is_file()
    assert_checked_on_other_sizes(rows)
    assert all(float(boxes) == float(scores) == 0 for *_, boxes, scores, _ in rows)
    assert all(classes == "same" for *_, classes in rows)


def test_onnx_matches_the_eager_model_within_tolerance_on_other_sizes(
    weights, tmp_path, capsys, sample_image
):
    code, rows = export(tmp_path, capsys, sample_image, weights, "--format", "onnx")
    assert code == 0 and (tmp_path / "exported" / "model.onnx").is_file()
    assert_checked_on_other_sizes(rows)
    assert all(float(boxes) <= 1e-2 and float(scores) <= 1e-4 and classes == "same"
               for *_, boxes, scores, classes in rows)


def test_scripting_equals_the_eager_model_bitwise_for_ltm_and_is_refused_for_ltm_af(
    weights, tmp_path, capsys, sample_image
):
    if weights[0] == "LTMAF":
        with pytest.raises(SystemExit, match="LTM-AF cannot be scripted: .*Linear, is not a TorchScript"):
            export(tmp_path, capsys, sample_image, weights, "--export-method", "scripting")
        return
    code, rows = export(tmp_path, capsys, sample_image, weights, "--export-method", "scripting")
    assert code == 0 and (tmp_path / "exported" / "model.ts").is_file()
    assert_checked_on_other_sizes(rows, traced=False)
    assert all(float(boxes) == float(scores) == 0 for *_, boxes, scores, _ in rows)
    assert all(classes == "same" for *_, classes in rows)


def test_scripting_to_onnx_is_refused(tmp_path, capsys, sample_image):
    with pytest.raises(SystemExit, match="scripting writes --format torchscript only"):
        export(tmp_path, capsys, sample_image, ("LTM", ""), "--export-method", "scripting", "--format",
               "onnx")


def test_the_check_reports_an_export_that_differs(sample_image):
    model = spread_model()
    sample = network_input(tiny_cfg(), cv2.imread(sample_image))
    adapter, traced = export_tracing(model, sample["image"])
    run = traced_runner(adapter, traced)

    def run_shifted(image):
        instances = run(image)
        instances.pred_boxes.tensor[:, 0] += 0.5
        return instances

    difference, = check_export(model, run_shifted, [sample])
    assert difference.boxes == pytest.approx(0.5, abs=1e-4) and difference.scores == 0
    assert not difference.within(EXACT)


def test_traced_batched_nms_makes_the_eager_nms_the_one_a_traced_graph_holds():
    """Anchor-like boxes in a 128 px image whose sides float32 rounds once the boxes are offset by
    their class: the per-class NMS of the eager model (more than 1000 boxes) and the class-offset
    NMS of a traced graph decide some IoUs next to the threshold differently."""
    g = torch.Generator().manual_seed(0)
    corners = torch.randint(0, 16, (5000, 2), generator=g).float() * 8
    sizes = torch.tensor([32.0, 40.3174736, 50.7968337, 64.0, 80.6349472])
    sides = sizes[torch.randint(0, 5, (5000,), generator=g)][:, None]
    boxes = torch.cat([corners, corners + sides], dim=1).clamp(max=128)
    scores = torch.rand(5000, generator=g)
    classes = torch.randint(0, 6, (5000,), generator=g)
    traced = torchvision.ops.boxes._batched_nms_coordinate_trick(boxes, scores, classes, 0.5)
    assert not torch.equal(torchvision.ops.batched_nms(boxes, scores, classes, 0.5), traced)
    with traced_batched_nms():
        assert torch.equal(torchvision.ops.batched_nms(boxes, scores, classes, 0.5), traced)
    assert not torch.equal(torchvision.ops.batched_nms(boxes, scores, classes, 0.5), traced)


def test_detections_of_equal_score_are_compared_in_the_order_of_their_boxes():
    from detectron2.structures import Boxes, Instances

    from ltm_d2.deploy.export import in_canonical_order

    boxes = torch.tensor([[5.0, 0, 9, 9], [1.0, 0, 4, 4], [2.0, 2, 8, 8]])
    a = Instances((10, 10), pred_boxes=Boxes(boxes), scores=torch.tensor([1.0, 1.0, 0.5]))
    b = a[torch.tensor([1, 0, 2])]
    b.scores = torch.tensor([1.0, 1.0 - 1e-7, 0.5])  # a runtime's rounding of the same scores
    assert torch.equal(in_canonical_order(a).pred_boxes.tensor, in_canonical_order(b).pred_boxes.tensor)
    assert in_canonical_order(a).pred_boxes.tensor[0, 0] == 1.0
