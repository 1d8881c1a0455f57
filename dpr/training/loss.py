"""The bi-encoder loss (negative log-likelihood of each question's positive over every passage of the global batch) and
the reranker's (softmax cross-entropy over each question's group)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(local: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate `local` from every rank (rank order); gradient flows only into this rank's own slice.

    `sizes` gives every rank's row count when they differ (the last batch of an epoch); rows are padded for the
    collective and trimmed after.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = sizes or [local.shape[0]] * world
    width = max(sizes)
    padded = local.detach().new_zeros((width, *local.shape[1:]))
    padded[: local.shape[0]] = local.detach()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    parts = [part[:n] for part, n in zip(parts, sizes)]
    parts[rank] = local
    return torch.cat(parts, dim=0)


def biencoder_nll(q: torch.Tensor, p: torch.Tensor, passages_per_question: int, temperature: float = 1.0,
                  masked: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """See `nll_terms`; `correct` as a Python int (a host read)."""
    loss, correct = nll_terms(q, p, passages_per_question, temperature, masked)
    return loss, int(correct)


def nll_terms(q: torch.Tensor, p: torch.Tensor, passages_per_question: int, temperature: float = 1.0,
              masked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL over the questions of `q` [Nq, H] against all passages `p` [Nq * passages_per_question, H].

    Question i's positive is passage i * passages_per_question (the collator's layout); every other passage of the
    batch is a negative, except the (row, column) entries of `masked` [K, 2] (false negatives: another copy of one
    of the row's positives), which are dropped from the softmax. Computed in fp32. Returns (loss, number of
    questions whose positive scored highest, a 0-dim tensor on the scores' device: read it when the step is queued).
    """
    if p.shape[0] != q.shape[0] * passages_per_question:
        raise ValueError(f"expected {q.shape[0] * passages_per_question} passages for {q.shape[0]} questions, got {p.shape[0]}")
    scores = (q.float() @ p.float().T) / temperature
    target = torch.arange(q.shape[0], device=q.device) * passages_per_question
    if masked is not None and masked.numel():
        pairs = masked.numpy() if masked.device.type == "cpu" else masked  # a batch's mask: checked on the host
        if bool((pairs[:, 1] == pairs[:, 0] * passages_per_question).any()):
            raise ValueError("a question's own positive column cannot be masked")
        masked = masked.to(scores.device, non_blocking=True)
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[masked[:, 0], masked[:, 1]] = False
        scores = scores.masked_fill(~keep, float("-inf"))
    loss = F.cross_entropy(scores, target)
    correct = (scores.detach().argmax(dim=1) == target).sum()
    return loss, correct


def global_nll(q_local: torch.Tensor, p_local: torch.Tensor, passages_per_question: int, temperature: float,
               q_sizes: list[int] | None = None, masked: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of the whole global batch, computed identically on every rank from gathered representations.

    Each rank's gradient reaches only its local representations, so summing parameter gradients over ranks gives
    exactly the single-process gradient of the global batch. `masked` indexes the global score matrix. `correct`
    stays a tensor (`nll_terms`): the steps read it with the loss, once, after the backward passes are queued.
    """
    p_sizes = [n * passages_per_question for n in q_sizes] if q_sizes else None
    return nll_terms(gather_with_grad(q_local, q_sizes), gather_with_grad(p_local, p_sizes),
                         passages_per_question, temperature, masked)


def listwise_ce(logits: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reranker's loss: softmax cross-entropy over each question's group of `group_size` pair logits (its
    positive first, then its negatives), summed over the groups of `logits` [n * group_size] (the caller divides by
    the global number of questions). Computed in fp32. Returns (summed loss, number of groups whose positive scored
    strictly highest, a 0-dim tensor)."""
    if logits.numel() % group_size:
        raise ValueError(f"{logits.numel()} logits do not split into groups of {group_size}")
    scores = logits.float().reshape(-1, group_size)
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    loss = F.cross_entropy(scores, target, reduction="sum")
    detached = scores.detach()
    correct = (detached[:, 0] > detached[:, 1:].max(dim=1).values).sum() if group_size > 1 else \
        torch.tensor(scores.shape[0], device=scores.device)
    return loss, correct
