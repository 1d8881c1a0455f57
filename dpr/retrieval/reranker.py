"""The reranker: a cross-encoder (train_reranker.py, or a sentence-transformers CrossEncoder) scores each (question,
passage) pair of a first-stage list's top `depth` and orders them by that score.

    from dpr import Reranker
    rr = Reranker.load("outputs/reranker")
    rr.score("北京大学是哪一年成立的？", ["北京大学创办于1898年……", "清华大学……"])   # logits, one per passage
    rr.rerank(question, hits, k=10)                                             # Hits, best first

Pairs are scored with the reranker's own recorded settings (its pair length, question length and lowercasing in
dpr_reranker.json, or what a sentence-transformers directory says), never a bi-encoder's or a run's flags, through
dpr.encode.score_pairs (length-sorted batches, tokenizing threads, device defaults). `rerank_lists` is the one
ordering rule of step 4 (dense_retriever.py --reranker), data/rerank.py and the Retriever API: the top `depth`
by reranker score, then the rest in their first-stage order, each scoring below every reranked passage.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dpr.data.formats import passage_input
from dpr.encode import score_cross_encoder
from dpr.models.cross_encoder import CrossEncoder, CrossEncoderSettings, load_cross_encoder
from dpr.utils.device_defaults import ModelShape, device_defaults
from dpr.utils.precision import default_device, resolve_amp_dtype

logger = logging.getLogger(__name__)


def passage_text(p) -> str:
    """A passage as the reranker reads it: a string as given, (text, title) or a Hit as 'title text'."""
    if isinstance(p, str):
        return p
    if isinstance(p, tuple):
        return passage_input(p[0], p[1] if len(p) > 1 else "")
    text = getattr(p, "text", None)
    if text is None:
        raise ValueError(f"passage {getattr(p, 'pid', p)!r} has no text to rerank (load the Retriever with passages=)")
    return passage_input(text, getattr(p, "title", "") or "")


class Reranker:
    """A cross-encoder on a device with a batch size and precision. Build with `load`."""

    def __init__(self, ce: CrossEncoder, path: str, batch_size: int | None = None, precision: str = "auto",
                 device: torch.device | str | None = None):
        self.path = str(path)
        self.ce = ce
        self.device = torch.device(device) if device is not None else default_device()
        self.amp_dtype = resolve_amp_dtype(self.device, precision)
        ce.model.to(self.device).eval()
        self.batch_size = batch_size or device_defaults(
            self.device, ModelShape.of(ce.model), ce.settings.q_max_length, ce.settings.max_length, 1, 1).encode_batch

    @classmethod
    def load(cls, path: str | os.PathLike, *, batch_size: int | None = None, precision: str = "auto",
             device: torch.device | str | None = None) -> Reranker:
        """The reranker saved in `path` (train_reranker.py's output, or a sentence-transformers CrossEncoder
        directory). batch_size: pairs per forward pass (default: the device's encoding batch, 128 on CPU, sized
        from the card's memory on CUDA); precision: auto | fp32 | bf16 | fp16 (autocast, the head kept in fp32).
        A directory that is not a one-label cross-encoder is an InputError naming it."""
        return cls(load_cross_encoder(Path(path)), str(path), batch_size, precision, device)

    @property
    def settings(self) -> CrossEncoderSettings:
        """The pair settings the reranker was made with (used for every pair it scores)."""
        return self.ce.settings

    def score_pairs(self, questions: Sequence[str], passages: Sequence, progress: bool = False) -> np.ndarray:
        """float32 logits of (questions[i], passages[i]) pairs (passages: strings, (text, title) or Hits)."""
        return score_cross_encoder(self.ce, list(questions), [passage_text(p) for p in passages], self.batch_size,
                                   self.device, self.amp_dtype, progress=progress)

    def score(self, question: str, passages: Sequence) -> np.ndarray:
        """float32 logits of one question against each passage (higher: more relevant; a listwise model's logits
        compare within a question, they are not probabilities)."""
        return self.score_pairs([question] * len(passages), passages)

    def rerank(self, question: str, hits: Sequence, k: int | None = None) -> list:
        """`hits` (Hits with texts) ordered by reranker score, the first k (default all): each keeps its first-stage
        score in `first_stage_score` (unless it has one already) and carries `reranker_score`, its `score` now."""
        hits = list(hits)
        scores = self.score(question, hits)
        order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))
        out = []
        for i in order[: len(hits) if k is None else k]:
            h = hits[i]
            first = h.first_stage_score if getattr(h, "first_stage_score", None) is not None else h.score
            out.append(dataclasses.replace(h, score=float(scores[i]), first_stage_score=first,
                                           reranker_score=float(scores[i])))
        return out


def rerank_lists(pids: list[str], scores: Sequence[float | None], parts: list[dict] | None,
                 reranker_scores: Sequence[float], k: int) -> tuple[list[str], list[float], list[dict]]:
    """The one ordering rule. The first len(reranker_scores) passages of a first-stage list (pids, scores, parts;
    best first) ordered by reranker score (ties: first-stage order), then the others in their first-stage order,
    the j-th of them (j = 1, 2, ...) scoring min(reranker scores) - j: below every reranked passage and strictly
    decreasing, so a reader that re-sorts by score (trec_eval) keeps the order. Cut to k. Each passage's parts gain
    `first_stage_score` and `reranker_score` (None below the depth)."""
    depth = len(reranker_scores)
    if depth > len(pids):
        raise ValueError(f"{depth} reranker scores for a list of {len(pids)} passages")
    parts = parts if parts is not None else [{} for _ in pids]
    order = sorted(range(depth), key=lambda i: (-float(reranker_scores[i]), i))
    floor = min((float(s) for s in reranker_scores), default=0.0)
    new_pids, new_scores, new_parts = [], [], []
    for i in order:
        new_pids.append(pids[i])
        new_scores.append(float(reranker_scores[i]))
        new_parts.append({**parts[i], "first_stage_score": _round(scores[i]),
                          "reranker_score": round(float(reranker_scores[i]), 6)})
    for j, i in enumerate(range(depth, len(pids)), 1):
        new_pids.append(pids[i])
        new_scores.append(floor - j)
        new_parts.append({**parts[i], "first_stage_score": _round(scores[i]), "reranker_score": None})
    return new_pids[:k], new_scores[:k], new_parts[:k]


def _round(score: float | None) -> float | None:
    return None if score is None else round(float(score), 6)


def rerank_many(reranker: Reranker, questions: Sequence[str], lists: Sequence, texts: dict[str, tuple[str, str]],
                depth: int, k: int, progress: bool = False) -> list[tuple[list[str], list[float], list[dict]]]:
    """`rerank_lists` for many questions at once: every question's top-`depth` pairs scored in one stream (length
    sorting across questions). `lists`: objects with pids, scores (None allowed) and parts (a Ranking, a
    Retrieved); `texts`: {pid: (text, title)} of every passage within the depth."""
    flat_q, flat_p, spans = [], [], []
    for question, ranked in zip(questions, lists, strict=True):
        top = ranked.pids[:depth]
        spans.append((len(flat_q), len(flat_q) + len(top)))
        flat_q += [question] * len(top)
        flat_p += [texts[pid] for pid in top]
    t0 = time.time()
    scores = reranker.score_pairs(flat_q, flat_p, progress=progress)
    took = time.time() - t0
    logger.info("reranked the top %d of %d questions: %d pairs in %.1fs (%.1f pairs/s; batch %d, %s)", depth,
                len(questions), len(flat_q), took, len(flat_q) / took if took > 0 else 0.0, reranker.batch_size,
                reranker.device)
    return [rerank_lists(list(r.pids), list(r.scores), r.parts, scores[a:b], k)
            for r, (a, b) in zip(lists, spans)]
