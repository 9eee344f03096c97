"""
The loss of `LTM(batched_inputs)` equals the loss of docs/method.md computed plainly, object by
object and anchor by anchor, in float64, from the same network outputs.
"""

import math

import pytest
import torch

from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import Boxes, pairwise_iou

from ltm_d2 import LTMAF
from ltm_d2.modeling.matchings import FreeAnchorMatching

from support import CUDA, build_tiny_model, make_input, random_boxes

SIZE = (64, 96)


def head_outputs(model, batched_inputs):
    """The J anchors (Boxes), (N, J, C) logits and (N, J, 4) deltas as the model computes them."""
    images = model.preprocess_image(batched_inputs)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    logits, deltas = model.head(features)
    anchors = Boxes.cat(model.anchor_generator(features))
    logits = torch.cat([permute_to_N_HWA_K(x, model.num_classes) for x in logits], 1)
    deltas = torch.cat([permute_to_N_HWA_K(x, 4) for x in deltas], 1)
    return anchors, logits, deltas


def network_outputs(model, batched_inputs):
    """head_outputs as (J, 4), (N, J, C), (N, J, 4) tensors on the CPU in float64."""
    anchors, logits, deltas = head_outputs(model, batched_inputs)
    return anchors.tensor.double().cpu(), logits.double().cpu(), deltas.double().cpu()


def iou(a, b):
    w = (torch.min(a[2], b[2]) - torch.max(a[0], b[0])).clamp(min=0)
    h = (torch.min(a[3], b[3]) - torch.max(a[1], b[1])).clamp(min=0)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def encode(anchor, box, weights):
    wx, wy, ww, wh = weights
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    ax, ay = anchor[0] + aw / 2, anchor[1] + ah / 2
    bw, bh = box[2] - box[0], box[3] - box[1]
    bx, by = box[0] + bw / 2, box[1] + bh / 2
    return torch.stack(
        [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)]
    )


def decode(anchor, delta, weights):
    wx, wy, ww, wh = weights
    aw, ah = anchor[2] - anchor[0], anchor[3] - anchor[1]
    ax, ay = anchor[0] + aw / 2, anchor[1] + ah / 2
    clamp = math.log(1000.0 / 16)
    cx, cy = ax + delta[0] / wx * aw, ay + delta[1] / wy * ah
    w = aw * torch.exp((delta[2] / ww).clamp(max=clamp))
    h = ah * torch.exp((delta[3] / wh).clamp(max=clamp))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def decode_point(anchor, delta):
    """LTM-AF: a point's box from its ReLU'd, stride-normalised distances l, t, r, b."""
    stride = anchor[2] - anchor[0]
    cx, cy = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    left, top, right, bottom = (delta.clamp(min=0) * stride).tolist()
    return torch.tensor([cx - left, cy - top, cx + right, cy + bottom], dtype=torch.float64)


def giou(a, b):
    hull = (torch.max(a[2], b[2]) - torch.min(a[0], b[0])) * (
        torch.max(a[3], b[3]) - torch.min(a[1], b[1])
    )
    w = (torch.min(a[2], b[2]) - torch.max(a[0], b[0])).clamp(min=0)
    h = (torch.min(a[3], b[3]) - torch.max(a[1], b[1])).clamp(min=0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union - (hull - union) / hull


def smooth_l1(x, beta):
    x = x.abs()
    return torch.where(x < beta, 0.5 * x**2 / beta, x - 0.5 * beta).sum()


def reference_loss(model, batched_inputs):
    """The loss of docs/method.md, written out object by object."""
    anchors, logits, deltas = network_outputs(model, batched_inputs)
    anchor_free = isinstance(model, LTMAF)
    weights = None if anchor_free else model.box2box_transform.weights

    def predicted_box(j, delta):
        return (
            decode_point(anchors[j], delta) if anchor_free else decode(anchors[j], delta, weights)
        )

    def localisation(n, j, box):  # Eq. 4's exp(-beta * l_reg); GIoU for LTM-AF (§3.3)
        if anchor_free:
            return torch.exp(-beta * (1 - giou(predicted_box(j, deltas[n, j]), box)))
        return torch.exp(
            -beta * smooth_l1(deltas[n, j] - encode(anchors[j], box, weights), l1_beta)
        )

    num_images, num_anchors, num_classes = logits.shape
    p = logits.sigmoid()
    beta, l1_beta, gamma = model.bbox_reg_weight, model.match_smooth_l1_beta, model.matching.gamma
    bag_size = min(model.bag_size, num_anchors)

    objects = []  # (image, class, box, bag)
    for n, x in enumerate(batched_inputs):
        gt = x["instances"]
        # The K anchors of highest IoU. Anchors of exactly equal IoU are common (e.g. all anchors of
        # one size that contain the box), so ties at the K-th place are broken as the authors' code
        # breaks them: by torch.topk on the IoU matrix. tests/test_bags.py checks the set property.
        # LTM-AF's point bags are checked on their own in tests/test_point_bags.py.
        if anchor_free:
            bags = model.build_bags(Boxes(anchors.float()), gt)
        else:
            bags = pairwise_iou(gt.gt_boxes, Boxes(anchors.float())).topk(bag_size, dim=1).indices
        for box, c, bag in zip(gt.gt_boxes.tensor.double(), gt.gt_classes.tolist(), bags.tolist()):
            objects.append((n, c, box, bag))

    positive = 0.0
    for n, c, box, bag in objects:
        phi = torch.stack([p[n, j, c] * localisation(n, j, box) for j in bag])
        positive = positive - torch.log((phi / (1 - phi)).sum() / (1 / (1 - phi)).sum())  # Eq. 10

    num_objects = max(1, len(objects))
    if isinstance(model.matching, FreeAnchorMatching):
        t1, alpha = model.matching.iou_threshold, model.matching.alpha
        suppression = torch.zeros_like(p)
        for n, c, box, _ in objects:
            pred_iou = torch.stack(
                [iou(predicted_box(j, deltas[n, j]), box) for j in range(num_anchors)]
            )
            t2 = max(pred_iou.max().item(), t1 + 1e-12)
            s = ((pred_iou - t1) / (t2 - t1)).clamp(0, 1)
            suppression[n, :, c] = torch.max(suppression[n, :, c], s)
        x = p * (1 - suppression)
        background = (x**gamma * -torch.log(1 - x)).sum()
        num_members = max(1, sum(len(bag) for *_, bag in objects))  # |B| K with full bags
        return alpha * positive / num_objects + (1 - alpha) * background / num_members

    # "ltm": P_{j,c} is the best relative localisation quality of anchor j among bags of class c.
    best = {}
    for n, c, box, bag in objects:
        q = torch.stack([iou(predicted_box(j, deltas[n, j]), box) for j in bag])
        q = (q / q.max()).clamp(0, 1)
        for j, qj in zip(bag, q.tolist()):
            best[(n, j, c)] = max(best.get((n, j, c), 0.0), qj)
    negative = 0.0
    for n, c, box, bag in objects:
        phi = torch.stack([p[n, j, c] * (1 - best[(n, j, c)]) for j in bag])
        m = (phi / (1 - phi)).sum() / (phi / (1 - phi) ** 2).sum()  # Eq. 25
        negative = negative - torch.log(m)
    outside = torch.ones_like(p, dtype=torch.bool)
    for n, j, c in best:
        outside[n, j, c] = False
    background = (p**gamma * -torch.log(1 - p))[outside].sum()
    return (positive + negative) / num_objects + background / max(1, len(best))


def batch(seed):
    boxes = [random_boxes(5, SIZE, seed), random_boxes(3, SIZE, seed + 1)]
    classes = [torch.tensor([0, 1, 1, 2, 0]), torch.tensor([1, 1, 5])]
    return [make_input(b, c, SIZE, seed=seed + k) for k, (b, c) in enumerate(zip(boxes, classes))]


@pytest.mark.parametrize("seed", [0, 1])
def test_ltm_loss_equals_the_per_object_definition(storage, device, seed):
    model = build_tiny_model(seed=seed, device=device)
    inputs = batch(seed)
    losses = model(inputs)
    assert set(losses) == {"loss_match_pos", "loss_match_neg", "loss_background"}
    expected = reference_loss(model, inputs)
    torch.testing.assert_close(sum(losses.values()).double().cpu(), expected, rtol=2e-6, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_freeanchor_loss_equals_the_per_object_definition(storage, device, seed):
    model = build_tiny_model(
        "MODEL.LTM.MATCHING",
        "freeanchor",
        "MODEL.LTM.BAG_SIZE",
        50,
        "MODEL.LTM.BBOX_REG_WEIGHT",
        0.75,
        "MODEL.LTM.SMOOTH_L1_BETA",
        0.11,
        seed=seed,
        device=device,
    )
    inputs = batch(seed)
    losses = model(inputs)
    assert set(losses) == {"loss_match_pos", "loss_background"}
    expected = reference_loss(model, inputs)
    torch.testing.assert_close(sum(losses.values()).double().cpu(), expected, rtol=2e-6, atol=0)


def test_ltm_loss_with_trained_like_outputs_equals_the_definition(storage, device):
    """Confident, well-localised predictions (phi near 1) exercise the max end of mean-max."""
    model = build_tiny_model(device=device)
    with torch.no_grad():
        model.head.cls_score.bias.fill_(3.0)
    inputs = batch(7)
    losses = model(inputs)
    torch.testing.assert_close(
        sum(losses.values()).double().cpu(), reference_loss(model, inputs), rtol=2e-6, atol=0
    )


AF = ("MODEL.META_ARCHITECTURE", "LTMAF", "MODEL.LTM.BBOX_REG_WEIGHT", 5.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_ltm_af_loss_equals_the_per_object_definition(storage, device, seed):
    model = build_tiny_model(*AF, seed=seed, device=device)
    with torch.no_grad():  # spread the predicted distances so that the GIoU varies
        model.head.bbox_pred.bias.copy_(torch.tensor([1.0, 0.5, 2.0, 1.5], device=device))
    inputs = batch(seed)
    losses = model(inputs)
    assert set(losses) == {"loss_match_pos", "loss_match_neg", "loss_background"}
    torch.testing.assert_close(
        sum(losses.values()).double().cpu(), reference_loss(model, inputs), rtol=2e-6, atol=0
    )


VARIANTS = {"ltm": (), "freeanchor": ("MODEL.LTM.MATCHING", "freeanchor"), "ltm_af": AF}


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_loss_on_the_gpu_equals_the_cpu_loss_on_the_same_predictions(storage, device, variant):
    model = build_tiny_model(*VARIANTS[variant])
    inputs = batch(0)
    anchors, logits, deltas = head_outputs(model, inputs)
    gt = [x["instances"] for x in inputs]
    on_cpu = model.matching.joined_losses(model, anchors, logits, deltas, gt)
    model.to(device)
    on_device = model.matching.joined_losses(
        model, anchors.to(device), logits.to(device), deltas.to(device), [x.to(device) for x in gt]
    )
    assert on_device.keys() == on_cpu.keys()
    for name in on_cpu:
        torch.testing.assert_close(on_device[name].cpu(), on_cpu[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device", [CUDA])
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_training_loss_on_the_gpu_equals_the_cpu_loss(storage, device, variant):
    """The whole model in float32 on both (no TF32 convolutions on the GPU), same weights."""
    model = build_tiny_model(*VARIANTS[variant])
    inputs = batch(0)
    on_cpu = sum(model(inputs).values())
    model.to(device)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        on_device = sum(model(inputs).values())
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-4, atol=0)
