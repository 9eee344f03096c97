"""
tools/convert_freeanchor_to_d2.py: maskrcnn-benchmark's RetinaNet layout (the authors' FreeAnchor
weights) into Detectron2's. The state dict "in their layout" is made here from one of our models,
by their naming and anchor order as described in maskrcnn-benchmark, independently of the converter.
"""

import importlib.util
import os
import re

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.anchor_generator import build_anchor_generator

from ltm_d2 import load_config
from ltm_d2.checkpoint import anchor_permutation

from support import REPO, make_input, tiny_cfg

spec = importlib.util.spec_from_file_location(
    "convert", os.path.join(REPO, "tools", "convert_freeanchor_to_d2.py")
)
convert_freeanchor_to_d2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert_freeanchor_to_d2)

# The converter's geometry on the tiny R-18: their P6 from P5, FrozenBatchNorm, no GroupNorm.
THEIR_GEOMETRY = (
    "MODEL.BACKBONE.NAME",
    "build_retinanet_resnet_fpn_p5_backbone",
    "MODEL.RESNETS.NORM",
    "FrozenBN",
    "MODEL.FPN.NORM",
    "",
    "MODEL.RETINANET.NORM",
    "",
    "MODEL.RETINANET.SCORE_THRESH_TEST",
    "0.0",
)


def build_random_model(seed):
    """The tiny model in their geometry, every parameter and buffer random (variances positive)."""
    torch.manual_seed(seed)
    model = build_model(tiny_cfg(*THEIR_GEOMETRY)).eval()
    with torch.no_grad():
        for name, value in model.state_dict().items():
            value.copy_(
                torch.rand_like(value) + 0.5
                if name.endswith("running_var")
                else 0.1 * torch.randn_like(value)
            )
    return model


def their_anchor_order(num_sizes, num_ratios):
    """maskrcnn-benchmark's generate_anchors, as documented: for each aspect ratio, each size.
    (their_anchors_at_the_first_location gives the anchors themselves.)"""
    return [(size, ratio) for ratio in range(num_ratios) for size in range(num_sizes)]


def our_anchor_order(num_sizes, num_ratios):
    """Detectron2's DefaultAnchorGenerator.generate_cell_anchors: for each size, each aspect
    ratio."""
    return [(size, ratio) for size in range(num_sizes) for ratio in range(num_ratios)]


def their_name(name):
    """maskrcnn-benchmark's RetinaNet name of one of our parameters."""
    name = name.replace("backbone.bottom_up.", "backbone.body.")
    name = re.sub(r"\.res(\d)\.", lambda m: f".layer{int(m[1]) - 1}.", name)
    name = re.sub(r"stem\.conv1\.norm\.", "stem.bn1.", name)
    name = re.sub(r"conv(\d)\.norm\.", r"bn\1.", name)
    name = name.replace("shortcut.norm.", "downsample.1.").replace(
        "shortcut.weight", "downsample.0.weight"
    )
    name = re.sub(
        r"backbone\.fpn_lateral(\d)", lambda m: f"backbone.fpn.fpn_inner{int(m[1]) - 1}", name
    )
    name = re.sub(
        r"backbone\.fpn_output(\d)", lambda m: f"backbone.fpn.fpn_layer{int(m[1]) - 1}", name
    )
    name = name.replace("backbone.top_block.", "backbone.fpn.top_blocks.")
    for ours, theirs in (
        ("cls_subnet", "cls_tower"),
        ("bbox_subnet", "bbox_tower"),
        ("cls_score", "cls_logits"),
        ("bbox_pred", "bbox_pred"),
    ):
        name = name.replace(f"head.{ours}.", f"rpn.head.{theirs}.")
    return name


def their_layout(model, num_sizes=3, num_ratios=3):
    """Our model's state dict as their checkpoint: their names, the head's per-anchor row blocks in
    their anchor order, saved from DistributedDataParallel ("module."), with their anchor buffer."""
    ours, theirs = (
        our_anchor_order(num_sizes, num_ratios),
        their_anchor_order(num_sizes, num_ratios),
    )
    state = {}
    for name, value in model.state_dict().items():
        if name.startswith(("head.cls_score.", "head.bbox_pred.")):
            blocks = value.reshape(len(ours), -1, *value.shape[1:])
            value = torch.stack([blocks[ours.index(anchor)] for anchor in theirs]).reshape(
                value.shape
            )
        state["module." + their_name(name)] = value.clone()
    state["module.rpn.anchor_generator.cell_anchors.0"] = torch.zeros(num_sizes * num_ratios, 4)
    return state


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(our model, their checkpoint file, the converted file)."""
    model = build_random_model(seed=0)
    folder = tmp_path_factory.mktemp("conversion")
    theirs, out = folder / "free_anchor.pth", folder / "converted.pth"
    torch.save({"model": their_layout(model), "iteration": 90000}, theirs)
    convert_freeanchor_to_d2.main([str(theirs), str(out)])
    return model, theirs, out


def test_their_layout_uses_their_names_and_anchor_order(converted):
    model, theirs, _ = converted
    state = torch.load(theirs, weights_only=True)["model"]
    for name in (
        "backbone.body.stem.conv1.weight",
        "backbone.body.stem.bn1.running_var",
        "backbone.body.layer1.0.conv1.weight",
        "backbone.body.layer2.0.downsample.0.weight",
        "backbone.body.layer2.0.downsample.1.running_mean",
        "backbone.fpn.fpn_inner2.weight",
        "backbone.fpn.fpn_layer4.bias",
        "backbone.fpn.top_blocks.p6.weight",
        "rpn.head.cls_tower.0.weight",
        "rpn.head.bbox_tower.2.bias",
        "rpn.head.cls_logits.weight",
    ):
        assert "module." + name in state, name
    assert not torch.equal(
        state["module.rpn.head.cls_logits.weight"], model.state_dict()["head.cls_score.weight"]
    )


def test_their_layout_converts_back_to_identical_weights(converted):
    model, _, out = converted
    weights = torch.load(out, weights_only=True)["model"]
    assert weights.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(weights[name], value), name


def test_the_converted_checkpoint_gives_identical_detections(converted):
    model, _, out = converted
    loaded = build_random_model(seed=1)
    DetectionCheckpointer(loaded).load(str(out))
    image = [make_input([], [], size=(96, 128), seed=2)]
    with torch.no_grad():
        expected, got = model(image)[0]["instances"], loaded(image)[0]["instances"]
    assert len(expected) > 10
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(got.scores, expected.scores) and torch.equal(
        got.pred_classes, expected.pred_classes
    )


def their_anchors_at_the_first_location(stride, sizes, ratios):
    """
    maskrcnn-benchmark's anchors of the location at the image's corner, as documented: for each
    aspect ratio r, for each size: a stride x stride box [0, stride - 1] (pixel indices, width
    x2 - x1 + 1) gets whole-pixel sides w = round(sqrt(stride^2 / r)), h = round(w * r) around its
    centre (stride - 1) / 2, then is scaled by size / stride about that centre. Returned in
    continuous coordinates (x2 + 1, y2 + 1), shape (len(ratios) * len(sizes), 4).
    """
    centre = (stride - 1) / 2
    anchors = []
    for r in ratios:
        w0 = round((stride * stride / r) ** 0.5)
        h0 = round(w0 * r)
        for size in sizes:
            w, h = w0 * size / stride, h0 * size / stride
            anchors.append(
                [
                    centre - (w - 1) / 2,
                    centre - (h - 1) / 2,
                    centre + (w - 1) / 2 + 1,
                    centre + (h - 1) / 2 + 1,
                ]
            )
    return torch.tensor(anchors)


def test_the_converted_heads_anchors_are_their_anchors():
    """Anchor k of a location in the converted config is their anchor anchor_permutation[k]."""
    cfg = load_config(
        os.path.join(
            REPO, "configs", "COCO-Detection", "freeanchor_R_50_FPN_1x_maskrcnn_benchmark.yaml"
        )
    )
    strides = [8, 16, 32, 64, 128]
    generator = build_anchor_generator(cfg, [ShapeSpec(stride=s) for s in strides])
    ours = generator([torch.zeros(1, 1, 1, 1)] * len(strides))
    permutation = anchor_permutation(3, 3)
    assert not torch.equal(permutation, torch.arange(9))
    for level, stride in enumerate(strides):
        theirs = their_anchors_at_the_first_location(
            stride, cfg.MODEL.ANCHOR_GENERATOR.SIZES[level], [0.5, 1.0, 2.0]
        )
        torch.testing.assert_close(ours[level].tensor, theirs[permutation].float())


def test_the_p5_backbone_computes_p6_from_p5():
    model = build_random_model(seed=0)
    features = model.backbone(torch.randn(1, 3, 128, 128))
    assert model.backbone.top_block.in_feature == "p5"
    torch.testing.assert_close(features["p6"], model.backbone.top_block.p6(features["p5"]))


def test_the_config_builds_their_geometry():
    cfg = load_config(
        os.path.join(
            REPO, "configs", "COCO-Detection", "freeanchor_R_50_FPN_1x_maskrcnn_benchmark.yaml"
        ),
        ["MODEL.DEVICE", "cpu"],
    )
    model = build_model(cfg)
    assert model.backbone.top_block.p6.in_channels == cfg.MODEL.FPN.OUT_CHANNELS == 256
    assert (
        model.head.cls_score.out_channels == 9 * 80 and model.head.bbox_pred.out_channels == 9 * 4
    )
    assert tuple(model.box2box_transform.weights) == (10.0, 10.0, 5.0, 5.0)
    assert model.pixel_mean.flatten().tolist() == pytest.approx([102.9801, 115.9465, 122.7717])
    assert model.pixel_std.flatten().tolist() == [1.0, 1.0, 1.0]


def test_a_key_of_another_model_is_refused_by_name(tmp_path):
    state = their_layout(build_random_model(seed=0))
    state["module.roi_heads.box.feature_extractor.fc6.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "mask_rcnn.pth")
    with pytest.raises(SystemExit, match="roi_heads.box.feature_extractor.fc6.weight"):
        convert_freeanchor_to_d2.main([str(tmp_path / "mask_rcnn.pth"), str(tmp_path / "out.pth")])


def test_a_missing_input_file_is_named(tmp_path):
    with pytest.raises(
        SystemExit, match=re.escape(str(tmp_path / "absent.pth")) + " does not exist"
    ):
        convert_freeanchor_to_d2.main([str(tmp_path / "absent.pth"), str(tmp_path / "out.pth")])


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(
        SystemExit, match=re.escape(str(tmp_path / "notes.pth")) + " is not a torch checkpoint"
    ):
        convert_freeanchor_to_d2.main([str(tmp_path / "notes.pth"), str(tmp_path / "out.pth")])
