"""
Size and cost of a detector at one input size, measured with Detectron2's analysis tools
(fvcore underneath): parameters, FLOPs and activations. fvcore counts a fused multiply-add as one
flop, as the detection literature's "FLOPs" do (Detectron2's model zoo, the paper).
"""

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from fvcore.nn import parameter_count
from torch import nn

from detectron2.utils.analysis import FlopCountAnalysis, activation_count_operators


@dataclass
class ModelCost:
    """Parameters, and FLOPs and activations of one inference, at one input size."""

    architecture: str
    input_size: Tuple[int, int]  # (H, W) before padding to the backbone's size divisibility
    parameters: int
    flops: float
    flops_by_operator: Dict[str, float]
    activations: float  # number of output elements of the counted operators


def blank_input(input_size: Tuple[int, int]) -> Dict:
    """A model input of (H, W) = `input_size` with mid-grey pixels (the costs measured do not depend
    on the pixels, only the postprocessing does, whose top-k and NMS fvcore does not count)."""
    return {"image": torch.full((3, *input_size), 128.0)}


def model_cost(model: nn.Module, input_size: Tuple[int, int]) -> ModelCost:
    """The :class:`ModelCost` of an eval-mode `model` on one image of (H, W) = `input_size`."""
    inputs = [blank_input(input_size)]
    with torch.no_grad():
        flops = FlopCountAnalysis(model, inputs)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        activations = activation_count_operators(model, inputs)  # millions, by operator
    return ModelCost(
        architecture=type(model).__name__,
        input_size=tuple(input_size),
        parameters=parameter_count(model)[""],
        flops=float(flops.total()),
        flops_by_operator=dict(flops.by_operator()),
        activations=sum(activations.values()) * 1e6,
    )
