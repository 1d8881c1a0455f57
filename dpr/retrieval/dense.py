"""Dense (and hybrid) retrieval over embedding shards: the one path of dense_retriever.py and the Retriever API.

Which passage vectors pair with a model (`check_model_pairs`), the search (`DenseIndex`: one index over every shard,
built or loaded once and searched many times; `search_dense` also searches window by window), and the fusion of its
lists with BM25 over the passage texts (`BM25Side`, `hybrid_rankings`).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpr.index.embeddings import Shard
from dpr.index.faiss_index import IndexSpec
from dpr.index.records import (
    VectorsMismatchError,
    check_coverage,
    check_pairing,
    describe_model,
    describe_source,
    older,
    read_record,
    source_fingerprint,
)
from dpr.index.search import SavedIndexPolicy, build_full_index, search_index, search_shards
from dpr.retrieval.hybrid import FusionConfig, fuse
from dpr.utils.io import InputError

logger = logging.getLogger(__name__)


@dataclass
class Ranking:
    """One question's passages, best first; `parts` holds per-passage extras (hybrid: both raw scores)."""

    pids: list[str]
    scores: list[float]
    parts: list[dict] | None = None


def model_side(model: str) -> dict:
    """The question tower's model fingerprint, record-shaped (for pairing and for saved question vectors)."""
    from dpr.models.fingerprint import model_fingerprint

    fp = model_fingerprint(str(model))
    if fp is None:
        raise InputError(model, "the model's files are not on this disk: cannot check which vectors it pairs with")
    return {"model": {"question_tower": fp.question_tower, "passage_tower": fp.passage_tower,
                      "tokenizer": fp.tokenizer}, "info": {"model": str(model)}}


def expected_passage_settings(options) -> dict:
    """The passage-record settings a search with these TowerOptions needs: what they give the passage tower
    (pooling, normalisation, lowercasing, passage prefix; its stored settings, then the overrides). The question
    prefix is the question side's own (e5's 'query: ' never meets 'passage: ')."""
    from dpr.index.records import SHARED_SETTINGS
    from dpr.models.source import expected_settings

    settings = expected_settings(options, "passage")
    if settings is None:
        return {}
    return {k: getattr(settings, k) for k in (*SHARED_SETTINGS, "passage_prefix")}


def check_pairs(paths: list[Path], side_model: dict | None, label: str, expected: dict | None, allow: bool = False,
                allow_partial: bool = False, tunable: tuple[str, ...] = ()) -> None:
    """The one pairing check: refuse passage vectors whose records say another model (or none) made them than
    `side_model` (the question side, called `label`), or other encoder settings than `expected` (`tunable`: those
    this run's flags can set), or that do not tile their collection (with `allow` / `allow_partial`: log a warning
    instead)."""
    found = [(p, read_record(p)) for p in paths]
    check_pairing(found, side_model, label, allow, expected, tunable)
    check_coverage(found, allow_partial)


def check_model_pairs(paths: list[Path], model: str, allow: bool = False, options=None,
                      allow_partial: bool = False) -> None:
    """`check_pairs` against `model`'s question tower and the encoder settings `options` (TowerOptions) give."""
    side = model_side(model)
    check_pairs(paths, side["model"], f"the question tower of {describe_model(side)}",
                expected_passage_settings(options) if options is not None else None, allow, allow_partial,
                ("pooling", "lowercase", "passage_prefix"))


def check_source(paths: list[Path], ctx_file: str | os.PathLike, allow: bool = False) -> None:
    """Refuse a passages file that is not the one the shards record as their source (the size + whole-file hash
    generate_dense_embeddings.py writes): its texts, ids and BM25 index would not be the ones searched (with
    `allow`: a warning instead). Shards without a current record were dealt with by the pairing check."""
    found = [(p, read_record(p)) for p in paths]
    if not found or any(rec is None or rec.get("kind") != "passage_vectors" or older(rec) for _, rec in found):
        return
    first_path, first = found[0]
    actual = source_fingerprint(ctx_file)
    if first.get("source") == actual:
        return
    message = (f"is not the passages file the passage vectors were encoded from: {first_path.name} records "
               f"{describe_source(first)}, this file is {describe_source({'source': actual})}")
    if allow:
        logger.warning("%s: %s (searching anyway: --allow_mismatched_vectors)", ctx_file, message)
        return
    raise VectorsMismatchError(ctx_file, f"{message}. Pass that file (--ctx_file / passages=), or "
                                         f"--allow_mismatched_vectors to search anyway")


def _check_dim(shards: list[Shard], vectors: np.ndarray, model: str) -> None:
    dim = shards[0].dim
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise InputError(shards[0].path, f"embeddings have dimension {dim} but the question encoder ({model}) gives "
                                         f"{vectors.shape[-1]}")


def rankings(all_ids: list[str], scores: np.ndarray, rows: np.ndarray) -> list[Ranking]:
    """faiss results (global rows, -1 for none) as passage ids and scores per question."""
    out = []
    for s, r in zip(scores, rows):
        keep = r >= 0
        out.append(Ranking([all_ids[i] for i in r[keep]], s[keep].tolist()))
    return out


class DenseIndex:
    """One faiss index over every shard (a trained one reused from / saved beside the embeddings, see
    dpr/index/search.py), built once and searched any number of times."""

    def __init__(self, shards: list[Shard], spec: IndexSpec, policy: SavedIndexPolicy = SavedIndexPolicy()):
        self.shards = shards
        self.ids = [pid for shard in shards for pid in shard.ids]
        self.built = build_full_index(shards, spec, policy)

    def search(self, vectors: np.ndarray, k: int, model: str = "the model") -> list[Ranking]:
        _check_dim(self.shards, vectors, model)
        return rankings(self.ids, *search_index(self.built.index, vectors, k))


def search_dense(shards: list[Shard], vectors: np.ndarray, k: int, spec: IndexSpec,
                 search_shard_size: int | None = None, policy: SavedIndexPolicy = SavedIndexPolicy(),
                 model: str = "the model") -> list[Ranking]:
    """Top-k passages per question vector: one index over everything (DenseIndex), or with `search_shard_size` an
    index per window of that many vectors, built and dropped, with a running top-k merge."""
    _check_dim(shards, vectors, model)
    t0 = time.time()
    if search_shard_size:
        logger.info("--search_shard_size: an index per window, built and dropped (no saved index is used or written)")
        all_ids = [pid for shard in shards for pid in shard.ids]
        result = rankings(all_ids, *search_shards(shards, vectors, k, spec, search_shard_size, policy))
    else:
        result = DenseIndex(shards, spec, policy).search(vectors, k, model)
    logger.info("searched %d questions over %d passages in %.1fs", len(vectors), sum(len(s.ids) for s in shards),
                time.time() - t0)
    return result


class BM25Side:
    """BM25 (jieba + bm25s) over a passages.tsv, its index built (or loaded from the cache beside it) once."""

    def __init__(self, ctx_file: str | os.PathLike):
        from dpr.data.bm25 import index_passages

        t0 = time.time()
        self.ctx_file = str(ctx_file)
        self.index, self.pids = index_passages(ctx_file)
        if len(set(self.pids)) != len(self.pids):
            seen: set[str] = set()
            for row, pid in enumerate(self.pids):
                if pid in seen:
                    raise InputError(ctx_file, f"passage id {pid!r} appears twice", line=row + 2)  # after the header
                seen.add(pid)
        logger.info("BM25 over %d passages of %s ready in %.1fs", len(self.pids), ctx_file, time.time() - t0)

    def search(self, questions: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Top-k (passage id, BM25 score) per question, best first (only passages sharing a token)."""
        return [[(self.pids[i], s) for i, s in hits] for hits in self.index.search(questions, k)]


def _round(score: float | None) -> float | None:
    return None if score is None else round(score, 6)


def hybrid_rankings(dense: list[Ranking], bm25: list[list[tuple[str, float]]], config: FusionConfig,
                    n_docs: int) -> list[Ranking]:
    """Each question's dense and BM25 lists fused (dpr/retrieval/hybrid.py), the first n_docs kept, with both raw
    scores (None where a passage is outside that side's first config.depth) in `parts`."""
    out = []
    for d, b in zip(dense, bm25, strict=True):
        hits = fuse(list(zip(d.pids, d.scores)), b, config)[:n_docs]
        parts = [{"dense_score": _round(h.dense_score), "bm25_score": _round(h.bm25_score)} for h in hits]
        out.append(Ranking([h.pid for h in hits], [h.score for h in hits], parts))
    return out


def hybrid_search(dense: Callable[[int], list[Ranking]], bm25: BM25Side, questions: list[str], k: int,
                  config: FusionConfig, names: tuple[str, str] = ("hybrid_depth", "k")) -> list[Ranking]:
    """Dense (`dense(depth)`: the top-depth rankings) and BM25 lists fused, the first k kept: the one hybrid path
    of the scripts and the Retriever. `names`: what the depth and k are called in the warning that a question may
    get fewer than k passages."""
    if config.depth < k:
        logger.warning("%s %d < %s %d: a question may get fewer than %d passages", names[0], config.depth, names[1],
                       k, k)
    fused = hybrid_rankings(dense(max(k, config.depth)), bm25.search(questions, config.depth), config, k)
    logger.info("fused (%s, alpha %.2f, depth %d)", config.method, config.alpha, config.depth)
    return fused
