"""Search embedding shards: one index over everything, or window by window with a running top-k merge so that only
`search_shard_size` vectors are in memory at once (for a flat index the results equal one index over everything).

A trained index over everything (IVF, PQ, HNSW: not flat, whose vectors already are the index) is saved beside the
embeddings with a record of what made it and reused while the record matches; windowed search saves nothing (each
window's index is built and dropped).
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from dpr.index.embeddings import Shard
from dpr.index.faiss_index import (
    GPU_MAX_K,
    BuiltIndex,
    IndexBuildError,
    IndexSpec,
    _hnsw,
    add_in_chunks,
    build_gpu_flat,
    build_index,
    factory_string,
    is_flat_desc,
    is_out_of_memory,
    iter_chunks,
    out_of_memory_message,
    over_gpu_limits,
    set_search_params,
    to_cpu,
    to_gpu,
    train_index,
    train_size,
)
from dpr.index.records import FORMAT, differences, identity_sha256, read_record, record_path
from dpr.utils.io import atomic_path, publish_then_mark

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


SAMPLE_READ_ROWS = 1 << 16  # rows one vectorised read of a training sample fetches from a shard at a time


def _sample_rows(shards: list[Shard], bounds: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` distinct random global rows (ascending) as one float32 [n, dim] array, filled in place shard by shard
    with vectorised reads of up to SAMPLE_READ_ROWS rows: the peak is the sample plus one such read."""
    rows = np.sort(np.random.default_rng(seed).choice(int(bounds[-1]), size=n, replace=False))
    out = np.empty((n, shards[0].dim), dtype=np.float32)
    cuts = np.searchsorted(rows, bounds)  # rows[cuts[i]:cuts[i+1]] lie in shard i
    for i, shard in enumerate(shards):
        for lo in range(int(cuts[i]), int(cuts[i + 1]), SAMPLE_READ_ROWS):
            hi = min(lo + SAMPLE_READ_ROWS, int(cuts[i + 1]))
            out[lo:hi] = shard.vectors[rows[lo:hi] - bounds[i]]
    return out


@dataclass(frozen=True)
class SavedIndexPolicy:
    """Whether a trained full index is saved beside the embeddings and reused (`rebuild`: build it again)."""

    save: bool = True
    rebuild: bool = False


def saved_index_path(shards: list[Shard], desc: str) -> Path:
    """`<dir>/<prefix>.index.<factory>.faiss` beside the first shard (`emb_shard0.npy` -> `emb.index.IVF..faiss`)."""
    first = shards[0].path
    prefix = re.sub(r"_shard\d+$", "", first.stem)
    return first.with_name(f"{prefix}.index.{re.sub(r'[^A-Za-z0-9]+', '_', desc).strip('_')}.faiss")


def index_record(shards: list[Shard], spec: IndexSpec, desc: str) -> dict | None:
    """What makes a saved index: the factory string, build parameters, training sample and every vectors file's
    record (None when a shard has no record: then nothing is saved)."""
    vectors = []
    for shard in shards:
        rec = read_record(shard.path)
        if rec is None:
            return None
        vectors.append({"file": shard.path.name, "rows": len(shard.ids), "record": identity_sha256(rec)})
    return {"format": FORMAT, "kind": "faiss_index", "factory": desc, "dim": shards[0].dim,
            "ef_construction": spec.ef_construction, "train": {"sample": "train_size() rows, seed 0"}, "vectors": vectors,
            "info": {"faiss": faiss.__version__}}


def _fill(spec: IndexSpec, dim: int, n: int, rows: Callable[[int, int], np.ndarray],
          sample: Callable[[int], np.ndarray]) -> tuple[BuiltIndex, int]:
    """Build, train (GPU k-means for an IVF when there is a GPU), move to the GPU(s) and fill an index over `n`
    vectors given by `rows(start, stop)`; returns it and the number of training points."""
    desc = factory_string(spec, dim, n)
    if spec.use_gpu and is_flat_desc(desc):
        return build_gpu_flat(dim, n, rows, spec), 0
    index = build_index(spec, dim, n)
    n_train = train_size(index, n)
    if n_train:
        t0 = time.time()
        train_index(index, sample(n_train), spec)
        logger.info("trained %s on %d vectors in %.1fs", desc, n_train, time.time() - t0)
    built = to_gpu(index, spec, desc) if spec.use_gpu and _hnsw(index) is None else BuiltIndex(index, desc)
    t0 = time.time()
    for start, stop in tqdm(list(iter_chunks(n)), desc="index vectors", unit="chunk", disable=n < 10**6):
        add_in_chunks(built.index, rows(start, stop))
    logger.info("indexed %d vectors (dim %d, %s%s) in %.1fs", built.ntotal, dim, desc,
                " on GPU" if built.on_gpu else "", time.time() - t0)
    return built, n_train


@contextlib.contextmanager
def _oom_guard(spec: IndexSpec, dim: int, n: int) -> Iterator[None]:
    """Turn a faiss out-of-memory error into one IndexBuildError with the index size and the flags that fit."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        where = "GPU" if spec.use_gpu else "host"
        raise IndexBuildError(out_of_memory_message(factory_string(spec, dim, n), n, dim, spec, where)) from None


def build_full_index(shards: list[Shard], spec: IndexSpec, policy: SavedIndexPolicy = SavedIndexPolicy()
                     ) -> BuiltIndex:
    """One index over every shard (trained on a random sample when the index type needs training); a trained index
    is reused from beside the embeddings when its record matches, and saved there after a build."""
    bounds = np.cumsum([0] + [len(s.ids) for s in shards])
    total, dim = int(bounds[-1]), shards[0].dim
    desc = factory_string(spec, dim, total)
    path = None if is_flat_desc(desc) or not policy.save else saved_index_path(shards, desc)
    with _oom_guard(spec, dim, total):
        wanted = index_record(shards, spec, desc) if path else None
        if path and wanted is None:
            logger.info("not saving the index: some embedding files have no record (.meta.json) to tie it to")
        if path and wanted and not policy.rebuild and path.is_file():
            diff = differences(read_record(path), wanted)
            if not diff:
                t0 = time.time()
                built = to_gpu(faiss.read_index(str(path)), spec, desc)
                set_search_params(built, spec)
                logger.info("reusing %s (%d vectors, built for these embeddings; --rebuild_index to build it "
                            "again) loaded in %.1fs", path, built.ntotal, time.time() - t0)
                return built
            logger.info("%s was built for other embeddings or settings (differs in %s): rebuilding", path,
                        ", ".join(diff))
        built, _ = _fill(spec, dim, total, lambda a, b: gather_rows(shards, bounds, a, b),
                         lambda n: _sample_rows(shards, bounds, n))
        if path and wanted:
            try:
                with publish_then_mark(record_path(path), wanted), atomic_path(path) as tmp:
                    faiss.write_index(to_cpu(built), str(tmp))
                logger.info("saved the trained index to %s (reused by the next run over these embeddings)", path)
            except OSError as e:
                logger.warning("could not save the index beside the embeddings (%s): searching without saving", e)
        set_search_params(built, spec)
    return built


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int,
                 query_batch: int = QUERY_BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) [Q, k <= len(vectors)] by inner product, read from `vectors` where they lie: what a flat CPU
    index returns (the same faiss routine), without copying the vectors into one."""
    return search_index(_ExactIP(vectors), queries, k, query_batch)


class _ExactIP:
    """Vectors searched where they lie by faiss.knn, with an index's `search(queries, k)` (for search_index)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return faiss.knn(queries, self.vectors, k, faiss.METRIC_INNER_PRODUCT)


def _search_window(spec: IndexSpec, dim: int, vectors: np.ndarray, queries: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one window: an index built over it and dropped, or, for a flat CPU index, `exact_search` (the same
    results without faiss's copy of the window)."""
    if not spec.use_gpu and is_flat_desc(factory_string(spec, dim, len(vectors))):
        return exact_search(vectors, queries, k)
    rng = np.random.default_rng(0)
    built, _ = _fill(spec, dim, len(vectors), lambda a, b: vectors[a:b],
                     lambda n: vectors[np.sort(rng.choice(len(vectors), n, replace=False))])
    set_search_params(built, spec)
    return search_index(built.index, queries, k)


def search_shards(shards: list[Shard], queries: np.ndarray, k: int, spec: IndexSpec,
                  search_shard_size: int | None = None,
                  policy: SavedIndexPolicy = SavedIndexPolicy()) -> tuple[np.ndarray, np.ndarray]:
    """(scores, global rows) [Q, k], best first. Rows number the shards' vectors in order (shard 0 first).

    With `search_shard_size`, an index is built over each window of that many vectors, searched and dropped; a
    running top-k merge keeps the best k. With a flat index this equals searching one index over everything.
    Such windows are never saved (`policy` applies to the index over everything only).
    """
    dim = shards[0].dim
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"query vectors have shape {queries.shape} but the embeddings have dimension {dim}")
    over = over_gpu_limits(k, spec) if spec.use_gpu else {}
    if over:
        raise IndexBuildError(f"faiss-gpu searches at most {GPU_MAX_K} neighbours and {GPU_MAX_K} IVF lists a query, "
                              f"asked for {', '.join(f'{n} {v}' for n, v in over.items())}: ask for fewer, or search "
                              f"on CPU")
    if not search_shard_size:
        built = build_full_index(shards, spec, policy)
        return search_index(built.index, queries, k)
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.full((len(queries), 0), -1, dtype=np.int64)
    total = sum(len(s.ids) for s in shards)
    # the bar is updated by hand: a bar wrapping the iterator would hold the previous window while the next is read
    bar = tqdm(desc="search windows", unit="window", total=-(-total // search_shard_size))
    for start, vectors in iter_windows(shards, search_shard_size):
        with _oom_guard(spec, dim, len(vectors)):
            scores, rows = _search_window(spec, dim, vectors, queries, min(k, len(vectors)))
        rows = np.where(rows >= 0, rows + start, -1)
        best_scores, best_rows = merge_topk(best_scores, best_rows, scores, rows, k)
        del vectors
        bar.update(1)
    bar.close()
    return best_scores, best_rows
