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


def test_gather_without_process_group_is_identity():
    t = torch.randn(2, 3)
    assert gather_with_grad(t) is t


def test_average_rank():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    ctx = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]])
    # q0: positive 1 is beaten by ctx 0 -> rank 1; q1: positive 2 is best -> rank 0
    assert average_rank(q, ctx, np.array([1, 2])) == 0.5
