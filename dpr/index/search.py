"""Search embedding shards: one index over everything, or window by window with a running top-k merge so that only
`search_shard_size` vectors are in memory at once (for a flat index the results equal one index over everything)."""
from __future__ import annotations

import logging
import time
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from dpr.index.embeddings import Shard
from dpr.index.faiss_index import IndexSpec, add_in_chunks, build_index, set_search_params, train_index, train_size

logger = logging.getLogger(__name__)

QUERY_BATCH = 4096


def search_index(index, queries: np.ndarray, k: int, query_batch: int = QUERY_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) [Q, k] for a built index; missing results (k > index size) have row -1 and score -inf."""
    scores = np.empty((len(queries), k), dtype=np.float32)
    rows = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), query_batch):
        s, r = index.search(np.ascontiguousarray(queries[start : start + query_batch], dtype=np.float32), k)
        scores[start : start + len(s)], rows[start : start + len(r)] = s, r
    scores[rows < 0] = -np.inf
    return scores, rows


def merge_topk(scores_a: np.ndarray, rows_a: np.ndarray, scores_b: np.ndarray, rows_b: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of two per-query result lists, best first; on equal scores `a` (earlier rows) comes first."""
    scores = np.concatenate([scores_a, scores_b], axis=1)
    rows = np.concatenate([rows_a, rows_b], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def iter_windows(shards: list[Shard], size: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first global row, float32 [<=size, dim] vectors) over all shards in order, `size` rows at a time."""
    bounds = np.cumsum([0] + [len(s.ids) for s in shards])
    total = int(bounds[-1])
    for start in range(0, total, size):
        yield start, gather_rows(shards, bounds, start, min(start + size, total))


def gather_rows(shards: list[Shard], bounds: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Global rows [start, stop) as one float32 array (they may span shard files)."""
    parts = []
    for i, shard in enumerate(shards):
        lo, hi = max(start, bounds[i]), min(stop, bounds[i + 1])
        if lo < hi:
            parts.append(np.asarray(shard.vectors[lo - bounds[i] : hi - bounds[i]], dtype=np.float32))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _sample_rows(shards: list[Shard], bounds: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rows = np.sort(np.random.default_rng(seed).choice(int(bounds[-1]), size=n, replace=False))
    which = np.searchsorted(bounds, rows, side="right") - 1
    return np.stack([np.asarray(shards[w].vectors[r - bounds[w]], dtype=np.float32) for w, r in zip(which, rows)])


def build_full_index(shards: list[Shard], spec: IndexSpec):
    """One index over every shard (trained on a random sample when the index type needs training)."""
    bounds = np.cumsum([0] + [len(s.ids) for s in shards])
    total, dim = int(bounds[-1]), shards[0].dim
    index = build_index(spec, dim, total)
    n_train = train_size(index, total)
    if n_train:
        t0 = time.time()
        train_index(index, _sample_rows(shards, bounds, n_train))
        logger.info("trained the index on %d vectors in %.1fs", n_train, time.time() - t0)
    t0 = time.time()
    for shard in tqdm(shards, desc="index shards", unit="shard", disable=len(shards) < 2):
        add_in_chunks(index, shard.vectors)
    logger.info("indexed %d vectors (dim %d) in %.1fs", index.ntotal, dim, time.time() - t0)
    set_search_params(index, spec)
    return index


def search_shards(shards: list[Shard], queries: np.ndarray, k: int, spec: IndexSpec,
                  search_shard_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, global rows) [Q, k], best first. Rows number the shards' vectors in order (shard 0 first).

    With `search_shard_size`, an index is built over each window of that many vectors, searched and dropped; a
    running top-k merge keeps the best k. With a flat index this equals searching one index over everything.
    """
    dim = shards[0].dim
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"query vectors have shape {queries.shape} but the embeddings have dimension {dim}")
    if not search_shard_size:
        return search_index(build_full_index(shards, spec), queries, k)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), 0), -1, dtype=np.int64)
    total = sum(len(s.ids) for s in shards)
    for start, vectors in tqdm(iter_windows(shards, search_shard_size), desc="search windows", unit="window",
                               total=-(-total // search_shard_size)):
        index = build_index(spec, dim, len(vectors))
        if not index.is_trained:
            train_index(index, vectors)
        index.add(vectors)
        set_search_params(index, spec)
        scores, rows = search_index(index, queries, min(k, len(vectors)))
        rows = np.where(rows >= 0, rows + start, -1)
        best_scores, best_rows = merge_topk(best_scores, best_rows, scores, rows, k)
        del index, vectors
    return best_scores, best_rows
