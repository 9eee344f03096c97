"""
The learning-to-match loss (paper §3.1–3.2; docs/method.md): the mean-max matching functions, the
likelihoods they are applied to, the focal background term, and the assembly of the three.

Every function here works on the whole batch at once. Anchors of the N images are flattened
into M = N·J rows; a bag is a row of K indices into those M rows; B is the number of objects in
the batch. The detectors (`LTM`, `LTMAF`) differ only in how they build bags and how they compute
the localisation likelihood; they share everything in this module.
"""

import math
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from detectron2.layers import cat
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils import comm

from .blocks import row_blocks

# 1 - phi is clamped here (as the authors' code does) so that 1 / (1 - phi) stays finite.
ONE_MINUS_PHI_MIN = 1e-12
# -log(x) is capped at 100 (x >= e^-100), the value binary cross-entropy caps it at, or lower where
# the gradient -1/x would overflow the dtype (x >= finfo.tiny: a cap of 87.3 in float32).
LOG_FLOOR = math.exp(-100.0)


def mean_max_weights(phi: Tensor) -> Tensor:
    """
    The matching weights of the members of a bag in M+ (Eq. 10):
    w_j = (1 / (1 - phi_j)) / sum_j' 1 / (1 - phi_j'), so that M+(phi) = sum_j w_j phi_j.
    Uniform while all phi are small; they concentrate on the best member as its phi -> 1
    (the anchor confidence of paper Fig. 6).

    Args:
        phi: (..., K) likelihoods in [0, 1].
    Returns:
        (..., K) weights, summing to 1 over each bag.
    """
    weight = 1.0 / (1.0 - phi).clamp(min=ONE_MINUS_PHI_MIN)
    return weight / weight.sum(-1, keepdim=True)


def mean_max(phi: Tensor) -> Tensor:
    """
    Positive matching function M+ (Eq. 10):
    M+(phi) = sum_j phi_j / (1 - phi_j) / sum_j 1 / (1 - phi_j) = sum_j w_j phi_j.

    Close to the mean of the bag while all phi are small, close to their max once one phi -> 1.

    Args:
        phi: (..., K) likelihoods in [0, 1].
    Returns:
        (...) bag likelihoods.
    """
    return (mean_max_weights(phi) * phi).sum(-1)


def negative_mean_max(phi: Tensor) -> Tensor:
    """
    Negative matching function M- (Eq. 25 of the appendix; Eq. 11 as printed drops a factor
    phi_j in the denominator): M-(phi) = sum_j phi_j/(1 - phi_j) / sum_j phi_j/(1 - phi_j)^2.

    Equals 1 - phi for a one-anchor bag; a bag whose phi are all 0 gives 1 (no evidence of a
    false localisation).

    Args:
        phi: (..., K) likelihoods in [0, 1].
    Returns:
        (...) probabilities that the bag does not falsely localise its object.
    """
    one_minus_phi = (1.0 - phi).clamp(min=ONE_MINUS_PHI_MIN)
    odds = phi / one_minus_phi
    numerator = odds.sum(-1)
    denominator = (odds / one_minus_phi).sum(-1)
    has_evidence = denominator > 0
    ratio = numerator / torch.where(has_evidence, denominator, torch.ones_like(denominator))
    return torch.where(has_evidence, ratio, torch.ones_like(ratio))


def neg_log(x: Tensor) -> Tensor:
    """-log(x), capped at 100 like binary cross-entropy (87.3 in float32, where the gradient of
    an uncapped value would overflow), with a zero gradient where capped."""
    return -torch.log(x.clamp(min=max(LOG_FLOOR, torch.finfo(x.dtype).tiny)))


def background_focal_loss(
    logits: Tensor, gamma: float, suppression: Optional[Tensor] = None
) -> Tensor:
    """
    Focal loss of anchors taken as background, without alpha: FL(x) = x^gamma * -log(1 - x),
    x = p * (1 - S), p = sigmoid(logits). Computed from the logits so that it stays exact and
    finite for saturated logits.

    Args:
        logits: (M, C) classification logits.
        suppression: (M, C) S in [0, 1] (FreeAnchor's down-weighting of well-localised anchors,
            no gradient); None means S = 0.
    Returns:
        (M, C) elementwise loss.
    """
    p = logits.sigmoid()
    if suppression is None:
        return p.pow(gamma) * F.softplus(logits)
    # 1 - p (1 - S) = sigmoid(-z) + p S
    x = p * (1.0 - suppression)
    return x.pow(gamma) * neg_log(torch.sigmoid(-logits) + p * suppression)


class _BackgroundFocalLossSum(torch.autograd.Function):
    """
    The sum of :func:`background_focal_loss` over (M, C) logits, a block of rows at a time
    (:func:`row_blocks`). Nothing but the inputs is kept for backward: the backward recomputes each
    block and differentiates it (as activation checkpointing does), so that no (M, C)
    intermediate is ever held besides the gradient itself.
    """

    @staticmethod
    def forward(ctx, logits, suppression, excluded, gamma):
        ctx.gamma = gamma
        ctx.save_for_backward(logits, suppression, excluded)
        total = logits.new_zeros(())
        for rows, local_excluded in _blocks_of_pairs(logits.shape, excluded):
            loss = _block_loss(logits[rows], suppression, rows, gamma)
            total += loss.flatten().index_fill_(0, local_excluded, 0.0).sum()
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total):
        logits, suppression, excluded = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for rows, local_excluded in _blocks_of_pairs(logits.shape, excluded):
            with torch.enable_grad():
                block = logits[rows].detach().requires_grad_(True)
                loss = _block_loss(block, suppression, rows, ctx.gamma)
            weight = grad_total.expand(loss.numel()).index_fill(0, local_excluded, 0.0)
            (grad[rows],) = torch.autograd.grad(loss, block, weight.view_as(loss))
        return grad, None, None, None


def _block_loss(logits: Tensor, suppression: Optional[Tensor], rows: slice, gamma: float):
    return background_focal_loss(logits, gamma, None if suppression is None else suppression[rows])


def _blocks_of_pairs(shape: Tuple[int, int], excluded: Tensor):
    """
    Yields (rows, local_excluded): the row blocks of an (M, C) array and the indices, into each
    block flattened, of the sorted flat indices `excluded` that fall in it.
    """
    num_rows, num_classes = shape
    blocks = row_blocks(num_rows, num_classes)
    starts = torch.tensor([b.start for b in blocks] + [num_rows], device=excluded.device)
    bounds = torch.searchsorted(excluded, starts * num_classes).tolist()
    for b, rows in enumerate(blocks):
        yield rows, excluded[bounds[b] : bounds[b + 1]] - rows.start * num_classes


def background_focal_loss_sum(
    logits: Tensor,
    gamma: float,
    suppression: Optional[Tensor] = None,
    excluded: Optional[Tensor] = None,
) -> Tensor:
    """
    Sum of :func:`background_focal_loss` over all (anchor, class) pairs but the `excluded` ones,
    with its gradient, in memory bounded by a block of pairs.

    Args:
        logits: (M, C) classification logits.
        suppression: (M, C) or None, as in :func:`background_focal_loss`.
        excluded: sorted int64 indices into the flattened (M*C) pairs, left out of the sum.
    Returns:
        scalar.
    """
    if excluded is None:
        excluded = torch.zeros(0, dtype=torch.int64, device=logits.device)
    return _BackgroundFocalLossSum.apply(logits, suppression, excluded, gamma)


# Predicted boxes per block, and blocks per group of blocks, of the suppression's pruning
# (:func:`freeanchor_suppression`).
SUPPRESSION_BLOCK = 64
SUPPRESSION_GROUP = 16
# The pruning keeps every (object, block) pair that could hold an IoU above t1 * (1 - this): a
# margin far above the few float32 roundings between a box's IoU and the bounds it is tested on.
SUPPRESSION_SLACK = 1e-3


def suppression_quality(iou: Tensor, t1: float, t2: Tensor) -> Tensor:
    """
    clamp((IoU - t1) / (t2 - t1), 0, 1) of FreeAnchor's suppression, 0 wherever IoU <= t1. In
    float32 t1 + 1e-12 rounds to t1, so an object whose best IoU is t1 exactly (a 10x6 box in a
    10x10 one, for t1 = 0.6) has t2 = t1, and the plain formula gives 0 / 0 = NaN there.
    """
    return torch.where(iou > t1, (iou - t1) / (t2 - t1), 0.0).clamp(min=0, max=1)


def freeanchor_suppression(
    pred_boxes: Boxes, gt_instances: Instances, num_classes: int, iou_threshold: float
) -> Tensor:
    """
    FreeAnchor's background suppression of one image, without gradient (docs/method.md,
    "freeanchor"):
    S_jc = max_{i: c_i = c} clamp((IoU(pred_j, b_i) - t1) / (t2_i - t1), 0, 1),
    t2_i = max(max_j IoU(pred_j, b_i), t1 + 1e-12).

    Only pairs with IoU(pred_j, b_i) >= t1 change S (every other pair gives 0, and t2_i is
    clamped at t1), so the IoU is computed only where it can reach t1: the predicted boxes are
    sorted into blocks of nearby boxes of similar size, and those into groups of blocks
    (:func:`_blocks_of_boxes`); an object is tested against the bounds of each group, then of
    each block of the groups that pass (:func:`_may_reach_iou`), and its IoU computed with the
    boxes of the blocks that pass. The IoU of those pairs is Detectron2's `pairwise_iou`, the
    same float operations, and S is the same, to the bit, as from the dense (I, J) IoU
    (:func:`dense_freeanchor_suppression`, used for t1 <= 0, where every pair counts).

    Args:
        pred_boxes: the J boxes predicted by the anchors.
        gt_instances: the image's I objects, with gt_boxes and gt_classes.
    Returns:
        (J, C) suppression S.
    """
    t1 = iou_threshold
    if t1 <= 0:
        return dense_freeanchor_suppression(pred_boxes, gt_instances, num_classes, t1)
    gt_boxes, classes = gt_instances.gt_boxes.tensor, gt_instances.gt_classes
    num_anchors = len(pred_boxes)
    per_class = pred_boxes.tensor.new_zeros(num_classes, num_anchors)
    if len(gt_boxes) == 0 or num_anchors == 0:
        return per_class.t()
    block, group = SUPPRESSION_BLOCK, SUPPRESSION_GROUP
    gt_areas = gt_instances.gt_boxes.area()
    boxes, areas, anchor_index, bounds = _blocks_of_boxes(pred_boxes, block, group)
    block_bounds = bounds.view(-1, group, 8)  # (Ng, G, 8)
    group_bounds = torch.cat(
        [block_bounds[..., :4].amax(1), block_bounds[..., 4:].amin(1)], dim=1
    )  # (Ng, 8)
    limits = _iou_limits(gt_boxes, t1 * (1.0 - SUPPRESSION_SLACK))  # (I, 8)
    # (object, group) pairs that may hold an IoU >= t1, a block of objects at a time
    in_groups = []
    for rows in row_blocks(len(gt_boxes), len(group_bounds) * 8):
        may = _may_reach_iou(limits[rows, None], group_bounds)  # (I', Ng)
        in_groups.append(may.nonzero() + torch.tensor([rows.start, 0], device=may.device))
    in_groups = cat(in_groups)  # (P1, 2): object, group
    # then (object, block) pairs, for the blocks of those groups
    candidates = []
    for pairs in row_blocks(len(in_groups), group * 8):
        obj, grp = in_groups[pairs].unbind(1)
        may = _may_reach_iou(limits[obj, None], block_bounds[grp])  # (P1', G)
        pair, member = may.nonzero().unbind(1)
        candidates.append(torch.stack([obj[pair], grp[pair] * group + member], dim=1))
    # (P, 2): object, block; none where no object passed a group's bounds
    candidates = cat(candidates) if candidates else in_groups
    if len(candidates) == 0:
        return per_class.t()
    # IoU of the candidates' boxes, block by block of pairs; kept where iou - t1 >= 0 (or NaN)
    objects, anchors, ious = [], [], []
    block_boxes = boxes.view(-1, block, 4)  # (Nb, B, 4)
    block_areas, block_anchors = areas.view(-1, block), anchor_index.view(-1, block)  # (Nb, B)
    for pairs in row_blocks(len(candidates), block):
        obj, blk = candidates[pairs].unbind(1)
        gt, pred = gt_boxes[obj, None], block_boxes[blk]  # (P', 1, 4), (P', B, 4)
        # Detectron2's pairwise_intersection and pairwise_iou, on (P', B) pairs
        inter = torch.min(gt[..., 2:], pred[..., 2:]) - torch.max(gt[..., :2], pred[..., :2])
        inter = inter.clamp_(min=0).prod(dim=2)  # (P', B)
        iou = torch.where(
            inter > 0,
            inter / (gt_areas[obj, None] + block_areas[blk] - inter),
            torch.zeros(1, dtype=inter.dtype, device=inter.device),
        )
        keep = ~((iou - t1) < 0)
        objects.append(obj[:, None].expand_as(iou)[keep])
        anchors.append(block_anchors[blk][keep])
        ious.append(iou[keep])
    objects, anchors, ious = cat(objects), cat(anchors), cat(ious)
    t2 = gt_areas.new_full((len(gt_boxes),), -math.inf).scatter_reduce_(0, objects, ious, "amax")
    t2 = t2.clamp(min=t1 + 1e-12)  # (I,)
    quality = suppression_quality(ious, t1, t2[objects])
    per_class.view(-1).scatter_reduce_(0, classes[objects] * num_anchors + anchors, quality, "amax")
    return per_class.t()


def dense_freeanchor_suppression(
    pred_boxes: Boxes, gt_instances: Instances, num_classes: int, iou_threshold: float
) -> Tensor:
    """
    :func:`freeanchor_suppression` from the dense (I, J) IoU of every object and predicted box,
    computed a block of objects at a time (:func:`row_blocks`).
    """
    t1 = iou_threshold
    per_class = pred_boxes.tensor.new_zeros(num_classes, len(pred_boxes))
    for rows in row_blocks(len(gt_instances), len(pred_boxes)):
        pred_iou = pairwise_iou(gt_instances.gt_boxes[rows], pred_boxes)  # (I', J)
        t2 = pred_iou.max(dim=1, keepdim=True).values.clamp(min=t1 + 1e-12)  # (I', 1)
        quality = suppression_quality(pred_iou, t1, t2)  # (I', J)
        index = gt_instances.gt_classes[rows, None].expand_as(quality)
        per_class.scatter_reduce_(0, index, quality, "amax")
    return per_class.t()


def _blocks_of_boxes(pred_boxes: Boxes, block: int, group: int):
    """
    The J boxes sorted so that consecutive ones are close in width, height and position (by
    half-octave of width and height, then in Z-order on a grid of half their size), padded to
    Nb = a multiple of `group` blocks of `block` boxes by repeating the last box, and the bounds
    of each block. The order only decides how tight the bounds are, never which pairs are found.

    Returns:
        boxes (Nb * block, 4) and their areas (Nb * block,), in the sorted order;
        anchor_index (Nb * block,): the index of each into `pred_boxes`;
        bounds (Nb, 8): max x2, max y2, max w, max h, min x1, min y1, min w, min h of each block.
    """
    tensor = pred_boxes.tensor
    num_boxes = len(tensor)
    size = (tensor[:, 2:] - tensor[:, :2]).nan_to_num(1.0, 1.0, 1.0).clamp(min=1e-6, max=1e6)
    octave = torch.floor(2.0 * torch.log2(size))  # (J, 2) half-octaves of w, h: -40..40
    cell = torch.exp2(octave / 2.0 - 1.0)  # (J, 2) half the size of the half-octave
    centre = ((tensor[:, :2] + tensor[:, 2:]) / 2.0).nan_to_num(0.0, 0.0, 0.0)
    grid = (centre / cell).clamp(min=-(2.0**20), max=2.0**20 - 1).floor().long() + 2**20
    octave = octave.long() + 64
    key = (octave[:, 0] * 128 + octave[:, 1]) * 2**42 + _interleave_bits(grid).sum(1)
    order = key.argsort()
    num_blocks = -(-num_boxes // (block * group)) * group
    anchor_index = torch.cat([order, order[-1:].expand(num_blocks * block - num_boxes)])
    boxes = tensor[anchor_index]
    areas = Boxes(boxes).area()
    corners = boxes.view(num_blocks, block, 4)
    widths = corners[..., 2:] - corners[..., :2]  # (Nb, B, 2)
    upper = torch.cat([corners[..., 2:], widths], dim=2).amax(1)  # (Nb, 4)
    lower = torch.cat([corners[..., :2], widths], dim=2).amin(1)  # (Nb, 4)
    return boxes, areas, anchor_index, torch.cat([upper, lower], dim=1)


def _interleave_bits(grid: Tensor) -> Tensor:
    """(J, 2) the 21-bit column and row of each box spread to the even and odd bits of 42: their
    sum is the Z-order (Morton) key, whose consecutive boxes fill squares of the grid."""
    v = grid
    for shift, mask in (
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, 0x5555555555555555),
    ):
        v = (v | (v << shift)) & mask
    return v << torch.tensor([0, 1], device=v.device)


def _iou_limits(gt_boxes: Tensor, threshold: float) -> Tensor:
    """
    (I, 8) what a predicted box needs to reach an IoU >= `threshold` > 0 with each object b.
    IoU(p, b) >= t needs an intersection w_i x h_i >= t * union >= t * max(area_b, area_p), hence
    w_i >= t * w_b and w_i >= t * w_p (likewise in y): x2_p >= x1_b + t w_b, y2_p >= y1_b + t h_b,
    w_p >= t w_b, h_p >= t h_b (the first 4 limits, lower limits of the bounds' maxima), and
    x1_p <= x2_b - t w_b, y1_p <= y2_b - t h_b, w_p <= w_b / t, h_p <= h_b / t (the last 4).
    Rounding is monotone, so these float limits hold for every pair whose IoU reaches
    t * (1 + a few float32 epsilons): the caller's slack covers it.
    """
    x1, y1, x2, y2 = gt_boxes.unbind(1)
    w, h = x2 - x1, y2 - y1
    tw, th = threshold * w, threshold * h
    return torch.stack(
        [x1 + tw, y1 + th, tw, th, x2 - tw, y2 - th, w / threshold, h / threshold], dim=1
    )


def _may_reach_iou(limits: Tensor, bounds: Tensor) -> Tensor:
    """
    False only where no box inside the bounds (:func:`_blocks_of_boxes`) can reach the IoU of the
    limits (:func:`_iou_limits`); (..., 8) both, broadcast. Written as a test of failure, so
    that a NaN bound keeps the block.
    """
    fails = (bounds[..., :4] < limits[..., :4]).any(-1) | (bounds[..., 4:] > limits[..., 4:]).any(
        -1
    )
    return ~fails


def relative_localisation_quality(bag_iou: Tensor) -> Tensor:
    """
    IoU(pred_j, b_i) / max_{j' in A_i} IoU(pred_j', b_i), clamped to [0, 1]: 1 for the best
    localised anchor of each bag.

    Args:
        bag_iou: (B, K) IoU between each object and the predicted boxes of its bag.
    """
    best = bag_iou.max(dim=1, keepdim=True).values.clamp(min=1e-12)
    return (bag_iou / best).clamp(min=0, max=1)


def average_over_workers(values: Tensor) -> Tensor:
    """Sum over all workers divided by the world size (identity on one worker)."""
    world_size = comm.get_world_size()
    if world_size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world_size


def _positive_likelihood(
    logits: Tensor, bags: Tensor, bag_classes: Tensor, loc_likelihood: Tensor
) -> Tuple[Tensor, Tensor]:
    """
    Returns p_{j,c_i} (B, K) of every bag member and phi_ij = p_{j,c_i} * loc_likelihood_ij (Eq. 4).
    """
    p = logits[bags, bag_classes[:, None].expand_as(bags)].sigmoid()
    return p, p * loc_likelihood


def ltm_losses(
    logits: Tensor,
    bags: Tensor,
    bag_classes: Tensor,
    loc_likelihood: Tensor,
    bag_iou: Tensor,
    gamma: float,
) -> Dict[str, Tensor]:
    """
    The LTM loss (Eq. 13 + Eq. 14): positive and negative bag matching normalised by the number of
    objects, plus the focal loss of every (anchor, class) pair outside the bags of that class,
    normalised by the number of distinct (anchor, class) pairs inside bags.

    Args:
        logits: (M, C) classification logits of all anchors of the batch.
        bags: (B, K) indices into the M anchors.
        bag_classes: (B,) class of each bag's object.
        loc_likelihood: (B, K) localisation likelihood of each bag member (with gradient).
        bag_iou: (B, K) IoU of each bag member's predicted box with its object (no gradient).
    Returns:
        dict with "loss_match_pos", "loss_match_neg", "loss_background".
    """
    num_classes = logits.shape[1]
    p, phi = _positive_likelihood(logits, bags, bag_classes, loc_likelihood)

    # Eq. 5: phi-_ij = p_{j,c_i} (1 - P_{j,c_i}), P the best relative quality of anchor j among the
    # bags of class c_i that hold it.
    keys = bags * num_classes + bag_classes[:, None]  # (B, K) index of (anchor, class) in M*C
    pairs, pair_of_member = keys.unique(return_inverse=True)
    quality = relative_localisation_quality(bag_iou)
    best_quality = quality.new_zeros(len(pairs)).scatter_reduce_(
        0, pair_of_member.flatten(), quality.flatten(), "amax"
    )
    phi_neg = p * (1.0 - best_quality[pair_of_member])

    background = background_focal_loss_sum(logits, gamma, excluded=pairs)

    counts = torch.tensor([len(bags), len(pairs)], dtype=torch.float32, device=logits.device)
    num_objects, num_pairs = average_over_workers(counts).clamp(min=1).tolist()
    return {
        "loss_match_pos": neg_log(mean_max(phi)).sum() / num_objects,
        "loss_match_neg": neg_log(negative_mean_max(phi_neg)).sum() / num_objects,
        "loss_background": background / num_pairs,
    }


def freeanchor_losses(
    logits: Tensor,
    bags: Tensor,
    bag_classes: Tensor,
    loc_likelihood: Tensor,
    suppression: Tensor,
    alpha: float,
    gamma: float,
) -> Dict[str, Tensor]:
    """
    The LTM(M+) = FreeAnchor loss: alpha * sum_i -log M+(phi_i) / |B| plus
    (1 - alpha) * sum_{j,c} FL(p_jc (1 - S_jc)) / sum_i |A_i|, the background normalised by the
    number of bag members (|B| K with full bags; |B| S with S-of-K bags; fewer where an image has
    fewer than K anchors), as the number of positive anchors normalises RetinaNet's focal loss.

    Args:
        logits, bags, bag_classes, loc_likelihood: as in :func:`ltm_losses`.
        suppression: (M, C) S of :func:`freeanchor_suppression` for every anchor of the batch.
    Returns:
        dict with "loss_match_pos", "loss_background".
    """
    _, phi = _positive_likelihood(logits, bags, bag_classes, loc_likelihood)
    counts = torch.tensor([len(bags), bags.numel()], dtype=torch.float32, device=logits.device)
    num_objects, num_members = average_over_workers(counts).clamp(min=1).tolist()
    background = background_focal_loss_sum(logits, gamma, suppression)
    return {
        "loss_match_pos": alpha * neg_log(mean_max(phi)).sum() / num_objects,
        "loss_background": (1 - alpha) * background / num_members,
    }
