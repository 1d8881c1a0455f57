"""The loss and DPR's average rank against direct computations."""
from __future__ import annotations

import numpy as np
import torch

from dpr.eval.average_rank import average_rank
from dpr.training.loss import biencoder_nll, gather_with_grad


def test_nll_is_cross_entropy_over_every_passage():
    torch.manual_seed(0)
    q, p = torch.randn(3, 4), torch.randn(6, 4)
    loss, correct = biencoder_nll(q, p, passages_per_question=2, temperature=0.5)
    scores = q @ p.T / 0.5
    expected = -sum(torch.log_softmax(scores[i], 0)[2 * i] for i in range(3)) / 3
    assert torch.allclose(loss, expected)
    assert correct == sum(int(scores[i].argmax() == 2 * i) for i in range(3))


def test_nll_is_fp32_under_half_inputs():
    q, p = torch.randn(2, 4).half(), torch.randn(4, 4).half()
    loss, _ = biencoder_nll(q, p, 2, temperature=0.01)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_masked_loss_equals_the_loss_without_those_columns():
    torch.manual_seed(1)
    q, p = torch.randn(3, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    masked = torch.tensor([[0, 4], [2, 1]])  # question 0 ignores passage 4, question 2 ignores passage 1
    loss, correct = biencoder_nll(q, p, passages_per_question=2, temperature=0.5, masked=masked)
    scores = q @ p.T / 0.5
    keep = {0: [0, 1, 2, 3, 5], 1: list(range(6)), 2: [0, 2, 3, 4, 5]}
    expected = -sum(torch.log_softmax(scores[i, keep[i]], 0)[keep[i].index(2 * i)] for i in range(3)) / 3
    assert torch.allclose(loss, expected)
    g_masked = torch.autograd.grad(loss, (q, p))
    g_expected = torch.autograd.grad(expected, (q, p))
    assert all(torch.allclose(a, b) for a, b in zip(g_masked, g_expected))
    unmasked, _ = biencoder_nll(q, p, 2, 0.5)
    assert not torch.allclose(unmasked, loss)


def test_own_positive_cannot_be_masked():
    import pytest

    with pytest.raises(ValueError, match="own positive"):
        biencoder_nll(torch.randn(2, 4), torch.randn(4, 4), 2, masked=torch.tensor([[1, 2]]))


def test_gather_without_process_group_is_identity():
    t = torch.randn(2, 3)
    assert gather_with_grad(t) is t


def test_average_rank_is_one_plus_strictly_higher():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    ctx = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]])
    # q0: positive 1 is beaten by ctx 0 -> rank 2; q1: positive 2 is best -> rank 1
    assert average_rank(q, ctx, np.array([1, 2])) == 1.5


def test_average_rank_ties_do_not_count_against_the_positive():
    q = np.array([[1.0, 0.0]])
    ctx = np.array([[0.5, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    # positive 1 ties with ctx 2 and is beaten by ctx 3 only
    assert average_rank(q, ctx, np.array([1])) == 2.0
