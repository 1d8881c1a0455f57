"""DPR's average-rank validation figure: where each question's positive lands among a shared pool of passages."""
from __future__ import annotations

import numpy as np


def average_rank(q_vecs: np.ndarray, ctx_vecs: np.ndarray, positive_idx: np.ndarray) -> float:
    """Mean rank of passage positive_idx[i] among all of `ctx_vecs` when scored by question i (dot product).

    rank = 1 + the number of passages scoring strictly higher than the positive: 1 means no passage beat it, and ties
    do not count against it. The pool must hold each passage once (the caller de-duplicates by passage id / text),
    or a copy of a negative counts twice. Lower is better.
    """
    if len(q_vecs) != len(positive_idx):
        raise ValueError(f"{len(q_vecs)} questions but {len(positive_idx)} positive indices")
    scores = q_vecs.astype(np.float32) @ ctx_vecs.astype(np.float32).T
    gold = scores[np.arange(len(q_vecs)), positive_idx]
    higher = (scores > gold[:, None]).sum(axis=1)
    return float(1 + higher.mean())
