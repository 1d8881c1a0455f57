"""Hard-negative mining: a training question's retrieved passages after the first `skip_top` ranks (where unlabelled
positives hide) that dpr.data.exclusion lets through: never a positive by id or by encoded text (title + text), nor,
under the sibling rule (`--sibling_ids` or the collection's collection_meta.json), a passage cut from the same
paragraph as a positive. With a reranker the mined negatives are denoised (`with_denoised_negatives`): the ones it
finds likely relevant are dropped, the others kept in their order."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dpr.data.cleaning import clean_text
from dpr.data.exclusion import exclusion_of_ctxs
from dpr.data.formats import passage_input


def mine_negatives(entry: dict, ranked_pids: list[str], passages: dict[str, tuple[str, str]], skip_top: int,
                   max_negatives: int | None, *, sibling_ids: bool) -> list[dict]:
    """hard_negative_ctxs for one DPR training entry from its ranked retrieval (best first)."""
    excl = exclusion_of_ctxs(entry.get("positive_ctxs") or [], sibling_ids)
    negatives = []
    for pid in ranked_pids[skip_top:]:
        if max_negatives is not None and len(negatives) >= max_negatives:
            break
        text, title = passages[pid]
        if excl.rejects(pid, text, title):
            continue
        negatives.append({"title": title, "text": text, "passage_id": pid})
    return negatives


def with_mined_negatives(entries: list[dict], rankings: list[list[str]], passages: dict[str, tuple[str, str]],
                         skip_top: int, max_negatives: int | None, *, sibling_ids: bool) -> tuple[list[dict], int]:
    """New training entries whose hard_negative_ctxs are the mined ones; also how many got none."""
    out, empty = [], 0
    for entry, ranked in zip(entries, rankings, strict=True):
        mined = mine_negatives(entry, ranked, passages, skip_top, max_negatives, sibling_ids=sibling_ids)
        empty += not mined
        out.append({**entry, "hard_negative_ctxs": mined})
    return out, empty


# --- denoising (RocketQA's denoised hard negatives) ------------------------------------------------------------------

DEFAULT_DENOISE_THRESHOLD = 0.5
DROPPED_FIELD = "dropped_hard_negatives"  # per question in a denoised training file: how many the reranker dropped


def false_negative_probability(candidates: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """The calibrated scale of --denoise_threshold: for each candidate, the softmax over the question's best
    positive and that candidate, taken at the candidate: sigmoid(s_candidate - max s_positive), the probability
    that the reranker picks the candidate over the labelled positive. A listwise reranker's logits mean nothing
    alone (any per-question shift leaves its loss unchanged) but their differences are log-odds of that choice; and
    unlike a softmax over the whole list, this does not shrink as more candidates are mined (--n_docs)."""
    margin = np.asarray(candidates, dtype=np.float64) - float(np.max(positives))
    return (1.0 / (1.0 + np.exp(-margin))).astype(np.float32)


def _ctx_text(ctx: dict) -> str:
    return passage_input(str(ctx.get("text") or ""), str(ctx.get("title") or ""))


def with_denoised_negatives(entries: list[dict], score_pairs: Callable[[list[str], list[str]], np.ndarray],
                            threshold: float = DEFAULT_DENOISE_THRESHOLD,
                            max_negatives: int | None = None) -> tuple[list[dict], dict]:
    """New training entries whose hard_negative_ctxs keep, in their order (filtered, never reordered), only the
    negatives whose false_negative_probability is at most `threshold`, then the first max_negatives; each entry gains
    DROPPED_FIELD. `score_pairs(questions, passages)` is the reranker's. An entry without positives cannot be
    compared: its negatives are kept (counted as `no_positive`). Also returns the counts for the log."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"the denoising threshold is a probability in (0, 1), got {threshold}")
    questions, passages, spans = [], [], []
    for e in entries:
        q = clean_text(str(e["question"]))
        pos, neg = e.get("positive_ctxs") or [], e.get("hard_negative_ctxs") or []
        start = len(questions)
        if pos and neg:
            questions += [q] * (len(pos) + len(neg))
            passages += [_ctx_text(c) for c in (*pos, *neg)]
        spans.append((start, len(pos) if pos and neg else 0))
    scores = score_pairs(questions, passages) if questions else np.empty(0, dtype=np.float32)
    out, stats = [], {"dropped": 0, "questions_with_drops": 0, "no_positive": 0, "scored_pairs": len(questions),
                      "threshold": threshold}
    for e, (start, n_pos) in zip(entries, spans, strict=True):
        neg = list(e.get("hard_negative_ctxs") or [])
        if n_pos:
            s = scores[start : start + n_pos + len(neg)]
            p = false_negative_probability(s[n_pos:], s[:n_pos])
            kept = [c for c, pc in zip(neg, p) if pc <= threshold]
        else:
            stats["no_positive"] += bool(neg)
            kept = neg
        dropped = len(neg) - len(kept)
        stats["dropped"] += dropped
        stats["questions_with_drops"] += dropped > 0
        out.append({**e, "hard_negative_ctxs": kept[:max_negatives] if max_negatives is not None else kept,
                    DROPPED_FIELD: dropped})
    return out, stats
