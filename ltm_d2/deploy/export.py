"""
Exporting a dense detector (LTM, LTM-AF, RetinaNet) with Detectron2's export API and with
``torch.export``, and checking each export against the eager model on images of other sizes than
the one it was exported on.

A saved TorchScript model needs ``import torchvision`` before ``torch.jit.load`` (its NMS is
torchvision's operator).

* TorchScript by tracing: :class:`detectron2.export.TracingAdapter` and ``torch.jit.trace``, as
  Detectron2's tools/deploy/export_model.py does. Height and width stay dynamic.
* TorchScript by scripting: :func:`detectron2.export.scripting_with_instances`. LTM and RetinaNet
  script; LTM-AF does not (:data:`LTMAF_SCRIPTING`).
* ONNX, legacy: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter) of the
  TracingAdapter, with the whole postprocessing (top-k, box decoding, per-class NMS) and a
  dynamic height and width.
* ``torch.export`` (an ExportedProgram saved as .pt2) and ONNX by the dynamo exporter
  (``torch.onnx.export(..., dynamo=True)``), of :class:`ltm_d2.deploy.dense_outputs.DenseOutputs`
  with a dynamic height and width: the network up to per-level scores and decoded boxes, the
  data-dependent rest of the inference left to
  :class:`ltm_d2.deploy.postprocess.DensePostprocessing` (dense_outputs.py says where
  Detectron2's inference stops the export).

A traced model (TorchScript or ONNX) holds the one batched NMS that torchvision traces: it offsets
each class's boxes by class index x (largest coordinate + 1) and runs one NMS, where the eager
model on the CPU runs one NMS per class once there are more than 1000 candidate boxes. The two
agree but for IoUs within float32 rounding of MODEL.RETINANET.NMS_THRESH_TEST (the offsets reach
1e5 px with 80 classes); :func:`check_export` can run the eager model with the traced one's NMS
(:func:`traced_batched_nms`) to tell those apart from a wrong export.

The exported models end, like Detectron2's, before the resize of the boxes to the original image
size (``detector_postprocess``), which :func:`check_export` applies as Detectron2's tool does.
"""

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
import torchvision.ops.boxes
from torch import Tensor, nn

from detectron2.config import CfgNode
from detectron2.data.detection_utils import build_augmentation
from detectron2.export import STABLE_ONNX_OPSET_VERSION, TracingAdapter, scripting_with_instances
from detectron2.modeling.box_regression import Box2BoxTransformLinear
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances, pairwise_iou

from ltm_d2.data.model_input import model_input
from ltm_d2.deploy.dense_outputs import DenseOutputs
from ltm_d2.deploy.postprocess import DensePostprocessing
from ltm_d2.errors import UserError
from ltm_d2.evaluation.nms_recall import nms_skipped

# The Instances fields of a dense detector's output, declared for scripting.
SCRIPTING_FIELDS = {"pred_boxes": Boxes, "scores": Tensor, "pred_classes": Tensor}
# Names of the ONNX outputs: the TracingAdapter flattens the output Instances by sorted field
# name, then its image size.
ONNX_OUTPUTS = ("pred_boxes", "pred_classes", "scores", "image_size")
LTMAF_SCRIPTING = (
    "LTM-AF cannot be scripted: its box coder, Detectron2's Box2BoxTransformLinear, is not a "
    "TorchScript class (Box2BoxTransform, RetinaNet's, is declared with @torch.jit.script), so "
    "torch.jit.script cannot compile the model's box2box_transform attribute; export it with "
    "--export-method tracing"
)


@dataclass(frozen=True)
class Tolerance:
    """Largest differences accepted between an export's detections and the eager model's."""

    boxes: float  # pixels, any coordinate
    scores: float


# TorchScript runs the eager model's own kernels: its detections are bitwise equal.
EXACT = Tolerance(boxes=0.0, scores=0.0)
# onnxruntime computes convolutions and sums in another order: float32 rounding differences,
# measured on the tiny config at up to 2e-4 px and 4e-6 (dynamo and legacy exporters), and with
# R-50 at 800x1067 (legacy) at 3e-3 px and 7e-7 (docs/deploy.md).
ONNX_TOLERANCE = Tolerance(boxes=1e-2, scores=1e-4)


class ExportError(UserError):
    """A model that cannot be exported as asked."""


def network_input(cfg: CfgNode, bgr: np.ndarray) -> Dict:
    """The model input of an (H, W, 3) BGR image, prepared as DefaultPredictor prepares it: in
    INPUT.FORMAT, resized by the test resize, of float pixels."""
    image = bgr[:, :, ::-1] if cfg.INPUT.FORMAT == "RGB" else bgr
    sample = model_input(image, *bgr.shape[:2], build_augmentation(cfg, is_train=False))
    return dict(sample, image=sample["image"].float())


def export_tracing(
    model: nn.Module, image: Tensor
) -> Tuple[TracingAdapter, torch.jit.ScriptModule]:
    """The TracingAdapter of an eval-mode `model` and its trace on one (3, H, W) `image`."""
    adapter = TracingAdapter(model, [{"image": image}]).eval()
    with torch.no_grad():
        return adapter, torch.jit.trace(adapter, (image,))


class ScriptableAdapter(nn.Module):
    """
    A dense detector that returns the fields of its Instances as dicts, the model that
    Detectron2's export_model.py scripts (a scripted model cannot return Instances,
    pytorch/pytorch#46944).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, inputs: Tuple[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        return [instances.get_fields() for instances in self.model(inputs)]


def export_scripting(model: nn.Module) -> torch.jit.ScriptModule:
    """``scripting_with_instances`` of an eval-mode `model`; ExportError, with torch's reason, where
    scripting fails."""
    try:
        return scripting_with_instances(ScriptableAdapter(model), SCRIPTING_FIELDS)
    except RuntimeError as e:
        torch_says = next(line for line in str(e).splitlines() if line.strip())
        reason = (
            LTMAF_SCRIPTING
            if isinstance(model.box2box_transform, Box2BoxTransformLinear)
            else (f"{type(model).__name__} cannot be scripted")
        )
        raise ExportError(f"{reason}. torch.jit.script says: {torch_says}") from e


def export_onnx_legacy(adapter: TracingAdapter, image: Tensor, path: str) -> None:
    """Write the ONNX model of a TracingAdapter by the TorchScript-based exporter, traced on
    `image`, with a dynamic height and width."""
    dynamic = {"image": {1: "height", 2: "width"}}
    dynamic.update({name: {0: "detections"} for name in ONNX_OUTPUTS[:-1]})
    with torch.no_grad():
        torch.onnx.export(
            adapter,
            (image,),
            path,
            dynamo=False,
            opset_version=STABLE_ONNX_OPSET_VERSION,
            input_names=["image"],
            output_names=list(ONNX_OUTPUTS),
            dynamic_axes=dynamic,
        )


def _dynamic_image() -> Dict[str, Dict[int, torch.export.Dim]]:
    """The dynamic shapes of DenseOutputs' one input, `image`: any height and width from 1 px."""
    return {
        "image": {
            1: torch.export.Dim("height", min=1, max=16384),
            2: torch.export.Dim("width", min=1, max=16384),
        }
    }


@contextlib.contextmanager
def _sizes_not_specialised_at_one():
    """
    Within it, ``torch.export`` takes no size of 1 in the example for a guard: at inputs up to
    128 px the coarsest level (P7) is 1x1, and guards on it ("== 1") would restrict the program to
    inputs whose P7 is 1x1 too. The sizes are then exported as if never 1, which holds for
    DenseOutputs' operations (the checks on other sizes run inputs whose P7 is 1x1 and larger).
    """
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(backed_size_oblivious=True):
        yield


def export_program(model: nn.Module, image: Tensor) -> torch.export.ExportedProgram:
    """The ExportedProgram of an eval-mode `model`'s DenseOutputs, exported on one (3, H, W)
    `image` with a dynamic height and width."""
    with torch.no_grad(), _sizes_not_specialised_at_one():
        return torch.export.export(DenseOutputs(model), (image,), dynamic_shapes=_dynamic_image())


def export_onnx_dynamo(model: nn.Module, image: Tensor, path: str) -> None:
    """Write the ONNX model of an eval-mode `model`'s DenseOutputs by the dynamo exporter, with a
    dynamic height and width; input ``image``, outputs named by DenseOutputs.output_names."""
    dense = DenseOutputs(model)
    with torch.no_grad(), _sizes_not_specialised_at_one():
        torch.onnx.export(
            dense,
            (image,),
            path,
            dynamo=True,
            dynamic_shapes=_dynamic_image(),
            input_names=["image"],
            output_names=dense.output_names,
            verbose=False,
        )


# An exported model as a function of a (3, H, W) image to its Instances at size (H, W).
Runner = Callable[[Tensor], Instances]


def traced_runner(adapter: TracingAdapter, traced: torch.jit.ScriptModule) -> Runner:
    return lambda image: adapter.outputs_schema(traced(image))[0]["instances"]


def scripted_runner(scripted: torch.jit.ScriptModule) -> Runner:
    def run(image: Tensor) -> Instances:
        fields = scripted(({"image": image},))[0]
        boxes = Boxes(fields.pop("pred_boxes"))  # a scripted model returns them as a tensor
        return Instances(tuple(image.shape[1:]), pred_boxes=boxes, **fields)

    return run


def onnx_legacy_runner(adapter: TracingAdapter, path: str) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def run(image: Tensor) -> Instances:
        outputs = session.run(None, {"image": image.cpu().numpy()})
        return adapter.outputs_schema([torch.from_numpy(o) for o in outputs])[0]["instances"]

    return run


def _dense_detections(
    image: Tensor, outputs: List[Tensor], postprocessing: DensePostprocessing
) -> Instances:
    """The Instances at the input's size of DenseOutputs' `outputs` (scores then boxes)."""
    levels = len(outputs) // 2
    boxes, scores, classes = postprocessing(outputs[:levels], outputs[levels:])
    return Instances(
        tuple(image.shape[1:]), pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes
    )


def program_runner(
    program: torch.export.ExportedProgram, postprocessing: DensePostprocessing
) -> Runner:
    module = program.module()
    return lambda image: _dense_detections(image, list(module(image)), postprocessing)


def onnx_dynamo_runner(path: str, postprocessing: DensePostprocessing) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def run(image: Tensor) -> Instances:
        outputs = session.run(None, {"image": image.cpu().numpy()})
        return _dense_detections(image, [torch.from_numpy(o) for o in outputs], postprocessing)

    return run


@dataclass
class Difference:
    """
    An export's detections on one image against the eager model's. Detections are matched one to
    one (:func:`compare_detections`); a detection left without a counterpart counts as a tie when
    NMS broke a tie of scores the other way, as unmatched otherwise.
    """

    input_size: Tuple[int, int]  # (H, W) of the network input
    eager: int  # number of detections
    exported: int
    boxes: float  # largest difference of a box coordinate over the matched pairs, pixels
    scores: float  # largest score difference over the matched pairs
    unmatched_eager: int
    unmatched_exported: int
    tied_eager: int
    tied_exported: int
    eager_seconds: float
    exported_seconds: float

    def within(self, tolerance: Tolerance) -> bool:
        return (
            self.unmatched_eager == self.unmatched_exported == 0
            and self.boxes <= tolerance.boxes
            and self.scores <= tolerance.scores
        )


def _greedy_pairs(cost: Tensor) -> Tuple[Tensor, Tensor]:
    """One-to-one (row, column) pairs of a cost matrix, cheapest first; an infinite cost is no
    pair."""
    cost = cost.clone()
    rows, columns = [], []
    while cost.numel() and bool(torch.isfinite(cost).any()):
        row, column = divmod(int(torch.argmin(cost)), cost.shape[1])
        rows.append(row)
        columns.append(column)
        cost[row, :] = float("inf")
        cost[:, column] = float("inf")
    return torch.tensor(rows, dtype=torch.long), torch.tensor(columns, dtype=torch.long)


def _others(indices: Tensor, taken: Tensor) -> Tensor:
    """The entries of `indices` but those at the positions `taken`."""
    keep = torch.ones(len(indices), dtype=torch.bool)
    keep[taken] = False
    return indices[keep]


def _pairwise(a: Instances, b: Instances) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(same class, largest box coordinate difference, score difference, IoU), each (len(a),
    len(b))."""
    boxes_a, boxes_b = a.pred_boxes.tensor, b.pred_boxes.tensor
    return (
        a.pred_classes[:, None] == b.pred_classes[None, :],
        (boxes_a[:, None, :] - boxes_b[None, :, :]).abs().amax(dim=2),
        (a.scores[:, None] - b.scores[None, :]).abs(),
        pairwise_iou(a.pred_boxes, b.pred_boxes),
    )


@dataclass
class Matching:
    """The outcome of :func:`compare_detections`: index tensors into the eager and exported
    detections."""

    pairs: Tuple[Tensor, Tensor]  # (eager, exported) indices of the matched pairs
    tied_eager: Tensor
    tied_exported: Tensor
    unmatched_eager: Tensor
    unmatched_exported: Tensor
    boxes: float  # largest box coordinate difference over the pairs, pixels (0 without pairs)
    scores: float


def compare_detections(
    eager: Instances,
    exported: Instances,
    tolerance: Tolerance,
    eager_candidates: Callable[[], Instances],
) -> Matching:
    """
    Match an export's detections to the eager model's, one to one, in three steps (docs/deploy.md):

    1. pairs of the same class whose boxes and scores agree within `tolerance`, closest boxes first;
    2. of the rest, the detections that NMS kept from a tie broken the other way. An exported
       detection is tied if the eager model had it as a candidate before NMS (`eager_candidates`:
       same class, box and score within tolerance) and it overlaps (IoU > 0) a remaining eager
       detection of the same class whose score is within the score tolerance of its own; a
       remaining eager detection is tied if it so overlaps a tied exported detection. Equal
       scores (a trained model saturates many at 1.0) are visited by top-k and NMS in an order of
       each runtime's own, so either of two overlapping equal-score candidates may survive;
    3. of the rest, pairs of the same class by decreasing IoU (IoU > 0): detections that differ.

    The largest box and score differences are over the pairs of steps 1 and 3; a detection in no
    pair and no tie is unmatched. `eager_candidates` is only called when step 1 leaves detections.
    """
    same_class, box_difference, score_difference, iou = _pairwise(eager, exported)
    agree = (
        same_class & (box_difference <= tolerance.boxes) & (score_difference <= tolerance.scores)
    )
    close = torch.where(agree, box_difference, torch.full_like(box_difference, float("inf")))
    agreeing_eager, agreeing_exported = _greedy_pairs(close)
    left_eager = _others(torch.arange(len(eager)), agreeing_eager)
    left_exported = _others(torch.arange(len(exported)), agreeing_exported)
    tied_eager, tied_exported = left_eager[:0], left_exported[:0]
    if len(left_eager) or len(left_exported):
        candidates = eager_candidates()
        is_class, is_box, is_score, _ = _pairwise(exported[left_exported], candidates)
        is_candidate = (
            is_class & (is_box <= tolerance.boxes) & (is_score <= tolerance.scores)
        ).any(1)
        tie = (
            same_class[left_eager][:, left_exported]
            & (score_difference[left_eager][:, left_exported] <= tolerance.scores)
            & (iou[left_eager][:, left_exported] > 0)
        )
        exported_is_tied = is_candidate & tie.any(dim=0)
        eager_is_tied = (tie & exported_is_tied[None, :]).any(dim=1)
        tied_eager, tied_exported = left_eager[eager_is_tied], left_exported[exported_is_tied]
        left_eager, left_exported = left_eager[~eager_is_tied], left_exported[~exported_is_tied]
    overlap = same_class[left_eager][:, left_exported] & (iou[left_eager][:, left_exported] > 0)
    cost = torch.where(overlap, -iou[left_eager][:, left_exported], torch.tensor(float("inf")))
    differing_eager, differing_exported = _greedy_pairs(cost)
    pairs = (
        torch.cat([agreeing_eager, left_eager[differing_eager]]),
        torch.cat([agreeing_exported, left_exported[differing_exported]]),
    )
    return Matching(
        pairs=pairs,
        tied_eager=tied_eager,
        tied_exported=tied_exported,
        unmatched_eager=_others(left_eager, differing_eager),
        unmatched_exported=_others(left_exported, differing_exported),
        boxes=float(box_difference[pairs].max()) if len(pairs[0]) else 0.0,
        scores=float(score_difference[pairs].max()) if len(pairs[0]) else 0.0,
    )


def _timed(function, *args):
    start = time.perf_counter()
    with torch.no_grad():
        result = function(*args)
    return result, time.perf_counter() - start


@contextlib.contextmanager
def traced_batched_nms():
    """Within it, torchvision's batched NMS is the one a traced graph holds (the class offsets)
    whatever the number of boxes."""
    per_class = torchvision.ops.boxes._batched_nms_vanilla
    torchvision.ops.boxes._batched_nms_vanilla = torchvision.ops.boxes._batched_nms_coordinate_trick
    try:
        yield
    finally:
        torchvision.ops.boxes._batched_nms_vanilla = per_class


def check_export(
    model: nn.Module,
    run: Runner,
    inputs: List[Dict],
    tolerance: Tolerance,
    nms_as_traced: bool = False,
) -> List[Difference]:
    """
    The differences between the eager `model` (with the batched NMS of a traced graph if
    `nms_as_traced`) and an exported one on each input (a dict of :func:`network_input`); both
    detections are at the original image size and matched by :func:`compare_detections`.
    """
    differences = []
    for item in inputs:
        nms = traced_batched_nms if nms_as_traced else contextlib.nullcontext
        with nms():
            eager, eager_seconds = _timed(lambda: model([item])[0]["instances"])
        exported, exported_seconds = _timed(run, item["image"])
        # The size as Python ints, as the eager model has it: from a tensor size,
        # detector_postprocess computes its scale in float32, one rounding away from the eager
        # model's.
        size = tuple(int(s) for s in exported.image_size)
        exported = Instances(size, **exported.get_fields())
        exported = detector_postprocess(exported, item["height"], item["width"])

        def candidates():
            with nms(), nms_skipped(model), torch.no_grad():
                return model([item])[0]["instances"]

        matching = compare_detections(eager, exported, tolerance, candidates)
        differences.append(
            Difference(
                input_size=tuple(item["image"].shape[1:]),
                eager=len(eager),
                exported=len(exported),
                boxes=matching.boxes,
                scores=matching.scores,
                unmatched_eager=len(matching.unmatched_eager),
                unmatched_exported=len(matching.unmatched_exported),
                tied_eager=len(matching.tied_eager),
                tied_exported=len(matching.tied_exported),
                eager_seconds=eager_seconds,
                exported_seconds=exported_seconds,
            )
        )
    return differences
