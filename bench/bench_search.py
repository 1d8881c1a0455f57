"""Search time for 2,000 queries with flat (exact), HNSW and IVF-PQ indexes (dpr.index code paths), and each
approximate index's recall@50 against flat, over (a) a corpus the size of the CMRC2018 mini corpus and (b) 1M
vectors; 384 dimensions (multilingual-e5-small).

    python bench/bench_search.py --sizes 11630 1000000 --queries 2000
    python bench/bench_search.py --emb 'outputs/cmrc_e5_emb/emb_shard*.npy' --query_vectors outputs/cmrc_e5_dev_q.npy

The second form measures real embeddings (generate_dense_embeddings.py output) and real question vectors
(dense_retriever.py --encode_q_and_save) instead.

Synthetic data shaped like sentence embeddings rather than uniform noise (on which no ANN index works): unit
vectors around 2,000 random topic centres; queries are perturbed corpus vectors. Prints one JSON line per index.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dpr.index.embeddings import open_shards  # noqa: E402
from dpr.index.faiss_index import (  # noqa: E402,E501
    IndexSpec,
    add_in_chunks,
    build_index,
    factory_string,
    set_search_params,
    train_index,
    train_size,
)
from dpr.index.search import gather_rows, search_index  # noqa: E402


def synthetic(n: int, n_queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim), dtype=np.float32)
    corpus = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, len(centres), m)] + 0.8 * rng.standard_normal((m, dim), dtype=np.float32)
        corpus[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    queries = corpus[rng.integers(0, n, n_queries)] + 0.05 * rng.standard_normal((n_queries, dim), dtype=np.float32)
    return corpus, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def run_one(spec: IndexSpec, corpus: np.ndarray, queries: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    t0 = time.perf_counter()
    index = build_index(spec, corpus.shape[1], len(corpus))
    n_train = train_size(index, len(corpus))
    if n_train:
        train_index(index, corpus[np.random.default_rng(1).choice(len(corpus), n_train, replace=False)])
    add_in_chunks(index, corpus)
    set_search_params(index, spec)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, rows = search_index(index, queries, k)
    search_s = time.perf_counter() - t0
    return {"index": factory_string(spec, corpus.shape[1], len(corpus)), "build_s": round(build_s, 2),
            "search_s": round(search_s, 3), "queries_per_s": round(len(queries) / search_s, 1)}, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[11_630, 1_000_000])
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--hnsw_m", type=int, default=32)
    p.add_argument("--ef_construction", type=int, default=40)
    p.add_argument("--ef_search", type=int, default=128)
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default: dpr's 4*sqrt(N)).")
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--emb", default=None, help="Glob of real embedding shards (replaces --sizes).")
    p.add_argument("--query_vectors", default=None, help="Real question vectors (.npy) to go with --emb.")
    args = p.parse_args()
    faiss.omp_set_num_threads(args.threads)
    for n in ([None] if args.emb else args.sizes):
        t0 = time.perf_counter()
        if args.emb:
            shards = open_shards(args.emb)
            bounds = np.cumsum([0] + [len(s.ids) for s in shards])
            corpus = gather_rows(shards, bounds, 0, int(bounds[-1]))
            queries = np.load(args.query_vectors)[: args.queries].astype(np.float32)
            n = len(corpus)
        else:
            corpus, queries = synthetic(n, args.queries, args.dim)
        print(json.dumps({"corpus": n, "dim": corpus.shape[1], "queries": len(queries), "threads": args.threads,
                          "data": args.emb or "synthetic", "generate_s": round(time.perf_counter() - t0, 1)}),
              flush=True)
        specs = [IndexSpec("flat"),
                 IndexSpec("hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search),
                 IndexSpec("ivfpq", nlist=args.nlist, nprobe=args.nprobe)]
        exact = None
        for spec in specs:
            result, rows = run_one(spec, corpus, queries, args.k)
            if exact is None:
                exact = rows
            result["recall@50_vs_flat"] = round(float(np.mean([len(set(a) & set(b)) / args.k
                                                                for a, b in zip(rows, exact)])), 4)
            result.update(corpus=n, loadavg_1m=round(os.getloadavg()[0], 2))
            print(json.dumps(result), flush=True)
        del corpus


if __name__ == "__main__":
    main()
