"""Properties of the mean-max matching functions M+ (Eq. 10) and M- (Eq. 25), and of the
normalisers of the losses built on them."""

import pytest
import torch

from ltm_d2.modeling.matching import (
    background_focal_loss,
    freeanchor_losses,
    mean_max,
    neg_log,
    negative_mean_max,
)


@pytest.mark.parametrize("phi", [0.0, 1e-6, 0.3, 0.9, 0.999])
def test_one_anchor_bag_positive_matching_is_phi(phi):
    torch.testing.assert_close(mean_max(torch.tensor([[phi]])), torch.tensor([phi]))


@pytest.mark.parametrize("phi", [1e-6, 0.3, 0.9, 0.999])
def test_one_anchor_bag_negative_matching_is_one_minus_phi(phi):
    torch.testing.assert_close(
        negative_mean_max(torch.tensor([[phi]], dtype=torch.float64)),
        torch.tensor([1 - phi], dtype=torch.float64),
    )


def test_positive_matching_is_near_the_mean_when_all_phi_are_small():
    phi = torch.tensor([[1e-4, 2e-4, 3e-4, 6e-4]], dtype=torch.float64)
    torch.testing.assert_close(mean_max(phi), phi.mean(-1), rtol=1e-3, atol=0)


def test_positive_matching_is_near_the_max_when_one_phi_approaches_one():
    phi = torch.tensor([[0.01, 0.2, 0.5, 1 - 1e-6]], dtype=torch.float64)
    assert mean_max(phi).item() > 0.9999
    assert mean_max(phi).item() <= 1.0


def test_positive_matching_lies_between_mean_and_max():
    phi = torch.rand(100, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = mean_max(phi)
    assert (m >= phi.mean(-1) - 1e-12).all() and (m <= phi.max(-1).values + 1e-12).all()


def test_negative_matching_of_small_phi_is_near_one_minus_their_weighted_mean():
    # M- = 1 - sum(w phi) / sum(w), w = phi / (1 - phi)^2 ~ phi for small phi.
    phi = torch.tensor([[1e-4, 2e-4, 3e-4]], dtype=torch.float64)
    torch.testing.assert_close(
        negative_mean_max(phi), 1 - (phi * phi).sum(-1) / phi.sum(-1), rtol=1e-6, atol=0
    )


def test_negative_matching_is_near_one_minus_the_max_when_one_phi_approaches_one():
    phi = torch.tensor([[0.01, 0.2, 0.5, 1 - 1e-4]], dtype=torch.float64)
    torch.testing.assert_close(
        negative_mean_max(phi), torch.tensor([1e-4], dtype=torch.float64), rtol=1e-3, atol=0
    )


def test_negative_matching_moves_to_the_max_faster_than_positive_matching():
    """Fig. 2: M- changes from mean to max faster than M+."""
    phi = torch.tensor([[0.05, 0.6]], dtype=torch.float64)
    mean, top = phi.mean(-1), phi.max(-1).values
    positive_progress = (mean_max(phi) - mean) / (top - mean)
    negative_progress = ((1 - negative_mean_max(phi)) - mean) / (top - mean)
    assert negative_progress.item() > positive_progress.item()


def test_negative_matching_of_a_bag_without_evidence_is_one():
    torch.testing.assert_close(negative_mean_max(torch.zeros(2, 5)), torch.ones(2))


@pytest.mark.parametrize("value", [0.0, 1e-30, 1e-8, 1 - 1e-7, 1.0])
@pytest.mark.parametrize("matching", [mean_max, negative_mean_max])
def test_matching_loss_and_gradient_are_finite_at_the_ends(matching, value):
    phi = torch.full((3, 8), value)
    phi[1, 0] = 0.5  # a mixed bag as well
    phi.requires_grad_(True)
    loss = neg_log(matching(phi)).sum()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(phi.grad).all()


def test_neg_log_is_capped_at_100_like_binary_cross_entropy():
    x = torch.tensor([0.0, 1e-50, 0.5], dtype=torch.float64)
    expected = torch.nn.functional.binary_cross_entropy(x, torch.ones_like(x), reduction="none")
    torch.testing.assert_close(neg_log(x), expected)


# Full bags of K = 5 members, S-of-K bags of 2, and no object at all.
@pytest.mark.parametrize("bag_shape", [(3, 5), (3, 2), (0, 5)])
def test_freeanchor_background_is_normalised_by_the_number_of_bag_members(bag_shape):
    g = torch.Generator().manual_seed(0)
    logits, suppression = torch.randn(20, 4, generator=g), torch.rand(20, 4, generator=g)
    bags = torch.randint(0, 20, bag_shape, generator=g)
    classes = torch.randint(0, 4, bag_shape[:1], generator=g)
    losses = freeanchor_losses(
        logits, bags, classes, torch.rand(bag_shape, generator=g), suppression, alpha=0.3, gamma=2.0
    )
    total = background_focal_loss(logits, 2.0, suppression).sum()
    torch.testing.assert_close(losses["loss_background"], 0.7 * total / max(1, bags.numel()))
