"""DPR's average-rank validation figure: where each question's positive lands among a shared pool of passages."""
from __future__ import annotations

import numpy as np


def average_rank(q_vecs: np.ndarray, ctx_vecs: np.ndarray, positive_idx: np.ndarray) -> float:
    """Mean 0-based rank of passage positive_idx[i] among all of `ctx_vecs` when scored by question i (dot product).

    Lower is better; 0 means every positive scored highest. Ties count against the positive.
    """
    if len(q_vecs) != len(positive_idx):
        raise ValueError(f"{len(q_vecs)} questions but {len(positive_idx)} positive indices")
    scores = q_vecs.astype(np.float32) @ ctx_vecs.astype(np.float32).T
    gold = scores[np.arange(len(q_vecs)), positive_idx]
    better_or_tied = (scores >= gold[:, None]).sum(axis=1) - 1
    return float(better_or_tied.mean())
