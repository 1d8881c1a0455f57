"""DuReader-retrieval's official metric (RocketQA DuReader-Retrieval-Baseline metric/evaluation.py, 2022 release).

Semantics kept exactly: only the first 50 predicted pids count; MRR@10, recall@1 and recall@50 are divided by the
number of *reference* queries (a reference query missing from the predictions scores 0); predicted qids that are
not in the reference are ignored except in QueriesRanked, which is the number of predicted queries; recall@k is a
hit rate (at least one relevant pid in the top k); no predicted qid in the reference is an error. One deliberate
difference: question ids are compared as strings (JSON object keys always are), so integer ids in a reference file
still match.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

from dpr.data.formats import release_gold
from dpr.utils.io import InputError, iter_jsonl, read_json

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 50
MRR_CUTOFF = 10


def load_reference(path: str | os.PathLike) -> dict[str, set[str]]:
    """qid -> relevant paragraph ids from dev.json-style lines (a qid on several lines gets the union)."""
    ref: dict[str, set[str]] = {}
    for n, obj in iter_jsonl(path):
        if "question_id" not in obj:
            raise InputError(path, "missing key 'question_id'", line=n)
        gold = release_gold(path, obj, n)
        if gold is None:
            raise InputError(path, "missing key 'answer_paragraphs' (a reference needs labels)", line=n)
        ref.setdefault(str(obj["question_id"]), set()).update(gold)
    if not ref:
        raise InputError(path, "no reference questions in this file")
    return ref


def load_predictions(path: str | os.PathLike) -> dict[str, list[Any]]:
    """The official PRED file: one JSON object {qid: [pid, ...]} in rank order."""
    preds = read_json(path)
    if not isinstance(preds, dict):
        raise InputError(path, "expected a JSON object {question_id: [paragraph_id, ...]} (pids in rank order)")
    for qid, pids in preds.items():
        if not isinstance(pids, list) or not all(isinstance(p, (str, int)) for p in pids):
            raise InputError(path, f"question {qid!r}: expected a list of paragraph ids")
    return preds


def find_duplicates(predictions: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """qid -> pids ranked more than once within its first 50 (the official quality check)."""
    out = {}
    for qid, pids in predictions.items():
        dups = [pid for pid, c in Counter(pids[:MAX_CANDIDATES]).items() if c > 1]
        if dups:
            out[qid] = dups
    return out


def evaluate(reference: dict[str, set[str]], predictions: dict[str, list[Any]], strict: bool = False) -> dict:
    """{"MRR@10", "recall@1", "recall@50", "QueriesRanked"} as the official script computes them."""
    dups = find_duplicates(predictions)
    if dups:
        qid, pids = next(iter(dups.items()))
        msg = (f"Cannot rank a passage multiple times for a single query: {len(dups)} queries do it, "
               f"e.g. QID={qid}, PID={pids[0]}")
        if strict:
            raise ValueError(msg)
        logger.warning(msg)
    mrr, hit1, hit50, matched = 0.0, 0, 0, 0
    for qid, pids in predictions.items():
        gold = reference.get(str(qid))
        if gold is None:
            continue
        matched += 1
        first = next((rank for rank, pid in enumerate(pids[:MAX_CANDIDATES], 1) if pid in gold), None)
        if first is None:
            continue
        hit50 += 1
        hit1 += first == 1
        if first <= MRR_CUTOFF:
            mrr += 1.0 / first
    if matched == 0:
        raise ValueError("No matching QIDs found. Are you sure you are scoring the evaluation set?")
    n = len(reference)
    return {"MRR@10": mrr / n, "QueriesRanked": len(predictions), "recall@1": hit1 / n, "recall@50": hit50 / n}
