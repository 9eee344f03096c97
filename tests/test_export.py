"""tools/export_model.py and ltm_d2/deploy/export.py: torch.export, ONNX (dynamo and legacy) and
TorchScript exports of LTM and LTM-AF on the tiny config, each checked against the eager model on
inputs of other sizes."""

import re

import cv2
import numpy as np
import pytest
import torch
import torchvision

from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from ltm_d2.checkpoint import SafeCheckpointer
from ltm_d2.deploy.dense_outputs import DenseOutputs
from ltm_d2.deploy.export import (
    EXACT,
    ONNX_TOLERANCE,
    check_export,
    compare_detections,
    export_onnx_dynamo,
    export_program,
    export_tracing,
    network_input,
    onnx_dynamo_runner,
    program_runner,
    traced_batched_nms,
    traced_runner,
)
from ltm_d2.deploy.postprocess import DensePostprocessing
from ltm_d2.errors import UserError

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
    SafeCheckpointer(spread_model(*ARCHITECTURES[request.param]), save_dir=str(folder)).save(
        "model"
    )
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
        [
            "--config-file",
            TINY_CONFIG,
            "--output",
            str(tmp_path / "exported"),
            "--sample-image",
            sample_image,
            *args,
            *ARCHITECTURES[architecture],
            "MODEL.WEIGHTS",
            path,
            "MODEL.DEVICE",
            "cpu",
            "TEST.DETECTIONS_PER_IMAGE",
            "50",
        ]
    )
    printed = capsys.readouterr().out
    print(printed)
    rows = re.findall(
        r"^\s+(\d+)x(\d+)( \(exported\))?\s+(\d+)/(\d+)\s+(\S+)\s+(\S+)\s+(\d+/\d+)\s+(\d+/\d+)\s",
        printed,
        re.M,
    )
    return code, rows


def assert_checked_on_other_sizes(rows, exported=True):
    sizes = {(h, w) for h, w, *_ in rows}
    assert len(rows) == 4 and len(sizes) == 4
    assert [r[2] != "" for r in rows] == ([True, False, False, False] if exported else [False] * 4)
    assert all(eager == exported == "50" for *_, eager, exported, _, _, _, _ in rows)


@pytest.mark.slow
def test_traced_torchscript_equals_the_eager_model_bitwise_on_other_sizes(
    weights, tmp_path, capsys, sample_image
):
    code, rows = export(tmp_path, capsys, sample_image, weights)
    assert code == 0 and (tmp_path / "exported" / "model.ts").is_file()
    assert_checked_on_other_sizes(rows)
    assert all(float(boxes) == float(scores) == 0 for *_, boxes, scores, _, _ in rows)
    assert all(unmatched == ties == "0/0" for *_, unmatched, ties in rows)


@pytest.mark.slow
def test_torch_export_with_its_postprocessing_equals_the_eager_model_bitwise_on_other_sizes(
    weights, tmp_path, capsys, sample_image
):
    code, rows = export(tmp_path, capsys, sample_image, weights, "--format", "torch_export")
    assert code == 0 and (tmp_path / "exported" / "model.pt2").is_file()
    assert (tmp_path / "exported" / "postprocessing.json").is_file()
    assert_checked_on_other_sizes(rows)
    assert all(float(boxes) == float(scores) == 0 for *_, boxes, scores, _, _ in rows)
    assert all(unmatched == ties == "0/0" for *_, unmatched, ties in rows)


@pytest.mark.slow
@pytest.mark.parametrize("onnx_format", ["onnx", "onnx_legacy"])
def test_onnx_matches_the_eager_model_within_tolerance_on_other_sizes(
    weights, tmp_path, capsys, sample_image, onnx_format
):
    code, rows = export(tmp_path, capsys, sample_image, weights, "--format", onnx_format)
    assert code == 0 and (tmp_path / "exported" / "model.onnx").is_file()
    dense = onnx_format == "onnx"
    assert (tmp_path / "exported" / "postprocessing.json").is_file() == dense
    assert_checked_on_other_sizes(rows)
    assert all(
        float(boxes) <= 1e-2 and float(scores) <= 1e-4 and unmatched == ties == "0/0"
        for *_, boxes, scores, unmatched, ties in rows
    )


@pytest.mark.slow
def test_scripting_equals_the_eager_model_bitwise_for_ltm_and_is_refused_for_ltm_af(
    weights, tmp_path, capsys, sample_image
):
    if weights[0] == "LTMAF":
        with pytest.raises(
            UserError, match="LTM-AF cannot be scripted: .*Linear, is not a TorchScript"
        ):
            export(tmp_path, capsys, sample_image, weights, "--export-method", "scripting")
        return
    code, rows = export(tmp_path, capsys, sample_image, weights, "--export-method", "scripting")
    assert code == 0 and (tmp_path / "exported" / "model.ts").is_file()
    assert_checked_on_other_sizes(rows, exported=False)
    assert all(float(boxes) == float(scores) == 0 for *_, boxes, scores, _, _ in rows)
    assert all(unmatched == ties == "0/0" for *_, unmatched, ties in rows)


def test_scripting_to_legacy_onnx_is_refused(tmp_path, capsys, sample_image):
    with pytest.raises(UserError, match="scripting writes --format torchscript only"):
        export(
            tmp_path,
            capsys,
            sample_image,
            ("LTM", ""),
            "--export-method",
            "scripting",
            "--format",
            "onnx_legacy",
        )


@pytest.mark.parametrize("dense_format", ["torch_export", "onnx"])
def test_an_export_method_with_a_torch_export_format_is_refused_naming_the_legacy_onnx(
    tmp_path, capsys, sample_image, dense_format
):
    legacy = "give --format onnx_legacy" if dense_format == "onnx" else ""
    with pytest.raises(UserError, match=f"neither traces nor scripts: drop .*tracing.*{legacy}"):
        export(
            tmp_path,
            capsys,
            sample_image,
            ("LTM", ""),
            "--export-method",
            "tracing",
            "--format",
            dense_format,
        )


def detections_of(model, image):
    with torch.no_grad():
        return model([{"image": image}])[0]["instances"]


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_the_postprocessing_of_the_dense_outputs_gives_the_eager_detections_bitwise(architecture):
    model = spread_model(*ARCHITECTURES[architecture])
    image = torch.rand(3, 72, 104, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        outputs = DenseOutputs(model)(image)
    boxes, scores, classes = DensePostprocessing.of(model)(outputs[:5], outputs[5:])  # P3-P7
    exported = Instances((72, 104), pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes)
    exported = detector_postprocess(exported, 72, 104)  # as the eager model ends
    eager = detections_of(model, image)
    assert len(eager) > 10
    assert torch.equal(exported.pred_boxes.tensor, eager.pred_boxes.tensor)
    assert torch.equal(exported.scores, eager.scores)
    assert torch.equal(exported.pred_classes, eager.pred_classes)


def test_the_postprocessing_settings_are_the_models_and_read_back_from_their_file(tmp_path):
    model = build_tiny_model("TEST.DETECTIONS_PER_IMAGE", 7, "MODEL.RETINANET.NMS_THRESH_TEST", 0.4)
    settings = DensePostprocessing.of(model)
    assert settings.detections_per_image == 7 and settings.nms_threshold == 0.4
    settings.save(str(tmp_path / "postprocessing.json"))
    assert DensePostprocessing.load(str(tmp_path / "postprocessing.json")) == settings


@pytest.mark.slow
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
@pytest.mark.parametrize("dense_format", ["torch_export", "onnx"])
def test_the_torch_export_formats_run_at_sizes_whose_coarsest_level_is_larger_than_at_export(
    architecture, dense_format, tmp_path
):
    """Exported on a 96x128 input (P7 1x1), checked at 200x168 (P7 2x2) and 40x300 (1x3)."""
    model = spread_model(*ARCHITECTURES[architecture])
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 96, 128, generator=g) * 255
    postprocessing = DensePostprocessing.of(model)
    if dense_format == "onnx":
        path = str(tmp_path / "model.onnx")
        export_onnx_dynamo(model, image, path)
        run, tolerance = onnx_dynamo_runner(path, postprocessing), ONNX_TOLERANCE
    else:
        run, tolerance = program_runner(export_program(model, image), postprocessing), EXACT
    inputs = [
        {"image": torch.rand(3, h, w, generator=g) * 255, "height": h, "width": w}
        for h, w in [(200, 168), (40, 300)]
    ]
    for difference in check_export(model, run, inputs, tolerance):
        print(architecture, dense_format, difference)
        assert difference.within(tolerance) and difference.eager == difference.exported > 50


@pytest.mark.slow
def test_the_check_reports_an_export_that_differs(sample_image):
    model = spread_model()
    sample = network_input(tiny_cfg(), cv2.imread(sample_image))
    adapter, traced = export_tracing(model, sample["image"])
    run = traced_runner(adapter, traced)

    def run_shifted(image):
        instances = run(image)
        instances.pred_boxes.tensor[:, 0] += 0.5
        return instances

    (difference,) = check_export(model, run_shifted, [sample], EXACT)
    assert difference.boxes == pytest.approx(0.5, abs=1e-4) and difference.scores == 0
    assert difference.unmatched_eager == difference.unmatched_exported == 0
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


def detections(boxes, scores, classes=None):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    classes = (
        torch.zeros(len(boxes), dtype=torch.long) if classes is None else torch.tensor(classes)
    )
    return Instances(
        (100, 100), pred_boxes=Boxes(boxes), scores=torch.tensor(scores), pred_classes=classes
    )


# Two candidates of one class with saturated scores, one pixel apart (IoU 0.95, so NMS keeps
# either one), and a third one elsewhere. onnxruntime rounds the first score down by 1e-7.
TIED = detections([[10, 10, 50, 50], [11, 10, 51, 50], [60, 60, 90, 90]], [1.0, 1.0, 0.9])
EAGER = TIED[[0, 2]]  # NMS visited the first candidate first
ONNX = TIED[[1, 2]]  # and onnxruntime the second (a score of 1 - 1e-7 ahead of its 1.0)


def test_a_tie_that_nms_broke_the_other_way_is_accepted_where_comparison_in_score_order_fails():
    in_score_order = (EAGER.pred_boxes.tensor - ONNX.pred_boxes.tensor).abs().max()
    assert in_score_order == 1.0 > ONNX_TOLERANCE.boxes
    matching = compare_detections(EAGER, ONNX, ONNX_TOLERANCE, lambda: TIED)
    assert matching.pairs[0].tolist() == matching.pairs[1].tolist() == [1]
    assert matching.tied_eager.tolist() == matching.tied_exported.tolist() == [0]
    assert len(matching.unmatched_eager) == len(matching.unmatched_exported) == 0
    assert matching.boxes == matching.scores == 0


def test_a_box_that_the_eager_model_never_proposed_is_a_difference_even_with_a_tied_score():
    shifted = detections([[10.5, 10, 50, 50], [60, 60, 90, 90]], [1.0, 0.9])
    matching = compare_detections(EAGER, shifted, ONNX_TOLERANCE, lambda: TIED)
    assert len(matching.tied_eager) == len(matching.tied_exported) == 0
    assert sorted(matching.pairs[1].tolist()) == [0, 1] and matching.boxes == 0.5


def test_a_tied_candidate_kept_beside_its_counterpart_is_unmatched():
    """An export that keeps both tied candidates (an NMS that suppresses less) has one detection too
    many: the eager detection it ties with is matched, so no tie was broken the other way."""
    matching = compare_detections(EAGER, TIED, ONNX_TOLERANCE, lambda: TIED)
    assert matching.unmatched_exported.tolist() == [1] and len(matching.tied_exported) == 0


def test_a_detection_of_another_class_is_unmatched():
    other_class = detections([[10, 10, 50, 50], [60, 60, 90, 90]], [1.0, 0.9], classes=[1, 0])
    matching = compare_detections(EAGER, other_class, ONNX_TOLERANCE, lambda: TIED)
    assert matching.unmatched_eager.tolist() == matching.unmatched_exported.tolist() == [0]
