"""Common ranking metrics beside the official DuReader three: nDCG@k and recall@k over binary relevance.

Both average over the *reference* questions, as the official metric does (a reference question missing from the
predictions scores 0); predicted questions outside the reference are ignored. A passage ranked twice counts once.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _first_ranks(pids: Iterable[Any], gold: set[str], k: int) -> list[int]:
    """1-based ranks within the top k where a relevant passage appears for the first time."""
    seen: set[str] = set()
    ranks = []
    for rank, pid in enumerate(list(pids)[:k], 1):
        pid = str(pid)
        if pid in gold and pid not in seen:
            seen.add(pid)
            ranks.append(rank)
    return ranks


def ndcg_at_k(reference: dict[str, set[str]], predictions: dict[str, list[Any]], k: int = 10) -> float:
    """Mean nDCG@k: gain 1 per relevant passage at rank r discounted by log2(r + 1), divided by the best possible
    DCG for that question's number of relevant passages (capped at k)."""
    if not reference:
        raise ValueError("no reference questions")
    total = 0.0
    for qid, gold in reference.items():
        gold = {str(g) for g in gold}
        if not gold:
            continue
        dcg = sum(1.0 / math.log2(r + 1) for r in _first_ranks(predictions.get(qid, []), gold, k))
        ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(gold), k) + 1))
        total += dcg / ideal
    return total / len(reference)


def recall_at_k(reference: dict[str, set[str]], predictions: dict[str, list[Any]], k: int = 100) -> float:
    """Mean fraction of each question's relevant passages found in its top k (trec_eval's recall_k; the official
    DuReader recall@1/@50 are hit rates instead: at least one relevant passage in the top k)."""
    if not reference:
        raise ValueError("no reference questions")
    total = 0.0
    for qid, gold in reference.items():
        gold = {str(g) for g in gold}
        if gold:
            total += len(_first_ranks(predictions.get(qid, []), gold, k)) / len(gold)
    return total / len(reference)


RECALL_DEPTH = 100


def extra_metrics(reference: dict[str, set[str]], predictions: dict[str, list[Any]], n_docs: int) -> dict:
    """{"nDCG@10", "recall@100", "n_docs"} for the metrics file's "extra" object; recall@100 is null (with a note)
    when fewer than 100 passages were retrieved per question, since it would only be recall@n_docs."""
    out: dict[str, Any] = {"nDCG@10": ndcg_at_k(reference, predictions, 10)}
    if n_docs >= RECALL_DEPTH:
        out["recall@100"] = recall_at_k(reference, predictions, RECALL_DEPTH)
    else:
        out["recall@100"] = None
        out["note"] = f"recall@100 needs --n_docs {RECALL_DEPTH} or more (this run kept {n_docs})"
    out["n_docs"] = n_docs
    return out
