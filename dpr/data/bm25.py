"""BM25 for Chinese: jieba tokens (HMM off, lower-cased, punctuation dropped), a token cache, bm25s for retrieval.

The bm25s score matrix is built here with numpy from flat token-id arrays (the same Lucene formula bm25s uses,
checked against bm25s's own `index` in the tests) so that memory stays at a few bytes per token instead of one
Python list per passage.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

import bm25s
import jieba
import numpy as np
from tqdm import tqdm

from dpr.utils.io import atomic_path, atomic_write, publish_then_mark

logger = logging.getLogger(__name__)
jieba.setLogLevel(logging.WARNING)
logging.getLogger("bm25s").setLevel(logging.WARNING)

TOKENIZER_NAME = f"jieba-{jieba.__version__}-hmm0-lower"
_NO_WORD = re.compile(r"^[\W_]+$")
TOKENIZE_CHUNK = 4096  # passages a worker tokenizes (and numbers its own vocabulary for) at a time
SCORE_CHUNK_DOCS = 250_000  # passages a score-matrix pass holds as (term, doc) pairs at a time

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Every core this process may run on (the default of --num_workers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tokenize(text: str) -> list[str]:
    """jieba tokens of `text` (dictionary only, no HMM), lower-cased, without pure punctuation/space tokens."""
    return [t for t in jieba.lcut(text.lower(), HMM=False) if not _NO_WORD.match(t)]


def _chunked(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _tokenize_chunk(texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(local vocabulary in first-occurrence order, int32 local ids of all tokens, int64 tokens per text)."""
    local: dict[str, int] = {}
    ids: list[int] = []
    lengths = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        tokens = tokenize(text)
        ids.extend([local.setdefault(t, len(local)) for t in tokens])
        lengths[i] = len(tokens)
    return list(local), np.array(ids, dtype=np.int32), lengths


def _bounded_map(submit: Callable[[T], Callable[[], R]], items: Iterable[T], ahead: int) -> Iterator[R]:
    """The results of `submit(item)()` in order, with at most `ahead` items submitted and not yet taken back
    (`submit` starts the work and returns what waits for its result)."""
    pending: deque = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= ahead:
            yield pending.popleft()()
    while pending:
        yield pending.popleft()()


def _pool_map(pool, fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """fn over items in order in a process pool, at most `ahead` items sent and not yet taken back (Pool.imap reads
    its whole input ahead: the whole collection's texts in memory when jieba is slower than reading the file)."""
    return _bounded_map(lambda item: pool.apply_async(fn, (item,)).get, items, ahead)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], num_threads: int) -> Iterator[R]:
    """fn over items in order, up to `num_threads` calls running at once (in threads) and no more held ahead."""
    if num_threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(num_threads) as ex:
        yield from _bounded_map(lambda item: ex.submit(fn, item).result, items, num_threads)


@dataclass
class TokenizedCorpus:
    """A tokenized collection: vocab token -> id, all token ids in one array, doc d = ids[offsets[d]:offsets[d+1]]."""

    vocab: dict[str, int]
    ids: np.ndarray
    offsets: np.ndarray

    @property
    def num_docs(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def build(cls, texts: Iterable[str], num_workers: int = 1, total: int | None = None) -> TokenizedCorpus:
        """Tokenize `texts` in order (with `num_workers` processes when > 1); the same arrays for any `num_workers`.

        Each chunk of passages comes back with its tokens numbered in a local vocabulary (first occurrence first); the
        parent only numbers that chunk's new tokens and maps its ids with one array lookup, so the serial part is per
        distinct token of a chunk, not per token. Token ids follow first occurrence over the whole collection, as a
        token-by-token loop would number them."""
        jieba.initialize()  # load the dictionary once, before any fork
        chunks = _chunked(iter(texts), TOKENIZE_CHUNK)
        pool = multiprocessing.get_context("fork").Pool(num_workers) if num_workers > 1 else None
        try:
            parts = _pool_map(pool, _tokenize_chunk, chunks, 2 * num_workers) if pool else map(_tokenize_chunk, chunks)
            with tqdm(total=total, desc="jieba", unit="doc", mininterval=5, disable=None) as bar:
                return cls.merge(parts, bar.update)
        finally:
            if pool:
                pool.terminate()

    @classmethod
    def merge(cls, parts: Iterable[tuple[list[str], np.ndarray, np.ndarray]],
              progress: Callable[[int], object] = lambda n: None) -> TokenizedCorpus:
        """The corpus of `_tokenize_chunk` results in order: each chunk's new tokens numbered, its ids looked up."""
        vocab: dict[str, int] = {}
        ids = array("i")  # grown in place (no second copy at the end, as concatenating parts would need)
        len_parts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        for local_vocab, local_ids, lengths in parts:
            lut = np.fromiter((vocab.setdefault(t, len(vocab)) for t in local_vocab), dtype=np.int32,
                              count=len(local_vocab))
            ids.frombytes(lut[local_ids].tobytes())
            len_parts.append(lengths)
            progress(len(lengths))
        return cls(vocab, np.frombuffer(ids, dtype=np.int32), np.cumsum(np.concatenate(len_parts)))

    def save(self, directory: str | os.PathLike, fingerprint: dict) -> None:
        """Write the cache; meta.json (with the source fingerprint) last, so a partial cache is never trusted."""
        d = Path(directory)
        with publish_then_mark(d / "meta.json", {**fingerprint, "num_docs": self.num_docs,
                                                 "num_tokens": int(len(self.ids))}):
            d.mkdir(parents=True, exist_ok=True)
            for name, arr in (("ids.npy", self.ids), ("offsets.npy", self.offsets)):
                with atomic_path(d / name) as tmp:
                    np.save(tmp, arr)
            with atomic_write(d / "vocab.json") as f:
                json.dump(sorted(self.vocab, key=self.vocab.__getitem__), f, ensure_ascii=False)

    @classmethod
    def load(cls, directory: str | os.PathLike, fingerprint: dict) -> TokenizedCorpus | None:
        """The cached corpus when its fingerprint matches, else None."""
        d = Path(directory)
        try:
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            if any(meta.get(k) != v for k, v in fingerprint.items()):
                return None
            tokens = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
            return cls({t: i for i, t in enumerate(tokens)}, np.load(d / "ids.npy"), np.load(d / "offsets.npy"))
        except (OSError, ValueError):
            return None


def file_fingerprint(path: str | os.PathLike) -> dict:
    st = os.stat(path)
    return {"source": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "tokenizer": TOKENIZER_NAME}


def cached_tokenize(texts: Iterable[str], source: str | os.PathLike, cache_dir: str | os.PathLike | None,
                    num_workers: int = 1, total: int | None = None) -> TokenizedCorpus:
    """Tokenize the texts of `source`, reusing / refreshing the cache in `cache_dir` (None: no cache)."""
    fp = file_fingerprint(source)
    if cache_dir is not None:
        cached = TokenizedCorpus.load(cache_dir, fp)
        if cached is not None:
            logger.info("BM25 tokens: reusing the cache in %s (%d passages)", cache_dir, cached.num_docs)
            return cached
    corpus = TokenizedCorpus.build(texts, num_workers=num_workers, total=total)
    if cache_dir is not None:
        try:
            corpus.save(cache_dir, fp)
        except OSError as e:  # e.g. a read-only data directory: go on without the cache
            logger.warning("BM25 token cache %s not written (%s)", cache_dir, e)
    return corpus


def score_matrix(corpus: TokenizedCorpus, k1: float, b: float, chunk_docs: int | None = None,
                 num_threads: int = 1) -> dict:
    """bm25s's `scores` dict (CSC over docs x vocab) with Lucene BM25: idf = ln(1 + (N-df+.5)/(df+.5)).

    Two passes over chunks of documents (document frequencies, then scores written straight into their CSC slots),
    so the peak memory is the output (8 bytes per distinct (doc, term)) plus one chunk. With `num_threads` > 1 the
    chunks are that many times smaller and their (term, doc) sorts run in threads (numpy sorts without the GIL);
    the output is the same for any chunking (each column lists its docs in ascending order).
    """
    n_docs, n_vocab = corpus.num_docs, len(corpus.vocab)
    doc_len = np.diff(corpus.offsets)
    avg_len = float(doc_len.mean()) if n_docs else 0.0
    step = max(1, (chunk_docs or SCORE_CHUNK_DOCS) // max(1, num_threads))
    chunks = [(s, min(s + step, n_docs)) for s in range(0, n_docs, step)]

    def pairs(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(term, doc, tf) of docs [start, stop), sorted by term, then doc."""
        start, stop = bounds
        ids = corpus.ids[corpus.offsets[start]:corpus.offsets[stop]].astype(np.int64)
        docs = np.repeat(np.arange(start, stop, dtype=np.int64), doc_len[start:stop])
        keys, tf = np.unique(ids * n_docs + docs, return_counts=True)
        term, doc = np.divmod(keys, n_docs)
        return term, doc, tf

    df = np.zeros(n_vocab, dtype=np.int64)
    for term, _, _ in ordered_map(pairs, chunks, num_threads):
        df += np.bincount(term, minlength=n_vocab)
    indptr = np.concatenate([[0], np.cumsum(df)])
    idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
    data = np.empty(indptr[-1], dtype=np.float32)
    indices = np.empty(indptr[-1], dtype=np.int32)
    free = indptr[:-1].copy()  # next free slot of each term's column
    for term, doc, tf in ordered_map(pairs, chunks, num_threads):
        pos = free[term] + np.arange(len(term)) - np.searchsorted(term, term)
        indices[pos] = doc
        data[pos] = idf[term] * tf / (tf + k1 * (1 - b + b * doc_len[doc] / avg_len))
        free += np.bincount(term, minlength=n_vocab)
    return {"data": data, "indices": indices, "indptr": indptr, "num_docs": n_docs}


_SCORE_ARRAYS = ("data", "indices", "indptr")


class BM25Index:
    """bm25s retrieval over a TokenizedCorpus (Lucene variant; k1/b default to Anserini's 0.9 / 0.4)."""

    def __init__(self, corpus: TokenizedCorpus, k1: float = 0.9, b: float = 0.4, num_threads: int = 1):
        self._setup(corpus.vocab, score_matrix(corpus, k1, b, num_threads=num_threads), k1, b)

    @classmethod
    def from_scores(cls, vocab: dict[str, int], scores: dict, k1: float, b: float) -> BM25Index:
        """An index over a score matrix built before (see `save` / `load`)."""
        index = cls.__new__(cls)
        index._setup(vocab, scores, k1, b)
        return index

    def _setup(self, vocab: dict[str, int], scores: dict, k1: float, b: float) -> None:
        self.vocab, self.k1, self.b = vocab, k1, b
        self.num_docs = int(scores["num_docs"])
        self.model = bm25s.BM25(k1=k1, b=b, method="lucene", backend="numpy")
        self.model.scores = scores
        self.model.vocab_dict = vocab
        self.model.unique_token_ids_set = set(vocab.values())
        self.model.nonoccurrence_array = None  # what bm25s's own index() sets for the Lucene variant

    def _meta(self, fingerprint: dict) -> dict:
        return {**fingerprint, "k1": self.k1, "b": self.b, "num_docs": self.num_docs, "vocab_size": len(self.vocab)}

    def save(self, directory: str | os.PathLike, fingerprint: dict) -> None:
        """Write the score matrix and vocabulary; meta.json (source fingerprint, k1, b) last."""
        d = Path(directory)
        with publish_then_mark(d / "meta.json", self._meta(fingerprint)):
            d.mkdir(parents=True, exist_ok=True)
            for name in _SCORE_ARRAYS:
                with atomic_path(d / f"{name}.npy") as tmp:
                    np.save(tmp, self.model.scores[name])
            with atomic_write(d / "vocab.json") as f:
                json.dump(sorted(self.vocab, key=self.vocab.__getitem__), f, ensure_ascii=False)

    @classmethod
    def load(cls, directory: str | os.PathLike, fingerprint: dict, k1: float, b: float) -> BM25Index | None:
        """The saved index when it was built from this fingerprint with this k1 and b, else None."""
        d = Path(directory)
        try:
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            if any(meta.get(k) != v for k, v in {**fingerprint, "k1": k1, "b": b}.items()):
                return None
            tokens = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
            scores = {name: np.load(d / f"{name}.npy") for name in _SCORE_ARRAYS}
        except (OSError, ValueError):
            return None
        scores["num_docs"] = meta["num_docs"]
        index = cls.from_scores({t: i for i, t in enumerate(tokens)}, scores, k1, b)
        return index if index._meta(fingerprint) == meta else None

    def query_ids(self, text: str) -> list[int]:
        return [self.vocab[t] for t in tokenize(text) if t in self.vocab]

    def search(self, queries: list[str], k: int, num_threads: int = 1) -> list[list[tuple[int, float]]]:
        """Top-k (doc index, score) per query, best first; only docs sharing a token (score > 0); [] for no match.

        With `num_threads` > 1 the queries are split over that many forked processes (bm25s's numpy scoring holds
        the GIL, so threads do not help); each reads the score matrix the parent holds, shared, not copied."""
        k = min(k, self.num_docs)
        qids = [self.query_ids(q) for q in queries]
        todo = [i for i, q in enumerate(qids) if q]
        out: list[list[tuple[int, float]]] = [[] for _ in queries]
        if not todo or k <= 0:
            return out
        work = [qids[i] for i in todo]
        workers = min(num_threads, -(-len(work) // _MIN_QUERIES_A_WORKER))
        if workers > 1:
            global _FORKED
            _FORKED = self
            step = -(-len(work) // (4 * workers))
            try:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    parts = pool.starmap(_forked_retrieve, [(work[s:s + step], k) for s in range(0, len(work), step)])
            finally:
                _FORKED = None
            docs, scores = np.concatenate([d for d, _ in parts]), np.concatenate([s for _, s in parts])
        else:
            docs, scores = self._retrieve(work, k)
        for i, d_row, s_row in zip(todo, docs.tolist(), scores.tolist()):
            out[i] = [(d, s) for d, s in zip(d_row, s_row) if s > 0]
        return out

    def _retrieve(self, qids: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """[Q, k] doc indices and scores, best first, equal scores by doc index; score 0 pads a short list."""
        docs = np.zeros((len(qids), k), dtype=np.int64)
        scores = np.zeros((len(qids), k), dtype=np.float32)
        for i, q in enumerate(qids):
            d, s = self._top_k(q, k)
            docs[i, :len(d)], scores[i, :len(s)] = d, s
        return docs, scores

    def _top_k(self, qids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """bm25s's float32 sum of the query tokens' columns (token by token, as its numpy backend adds them), then
        the k best of the docs that score at all (a selection over every doc is slow when most score 0)."""
        m = self.model.scores
        data, indices, indptr = m["data"], m["indices"], m["indptr"]
        total = np.zeros(self.num_docs, dtype=np.float32)
        for t in qids:
            a, b = indptr[t], indptr[t + 1]
            total[indices[a:b]] += data[a:b]  # a column lists each doc once
        hit = np.flatnonzero(total > 0)
        if len(hit) > k:
            vals = total[hit]
            kth = np.partition(vals, len(vals) - k)[len(vals) - k]
            above, tied = hit[vals > kth], hit[vals == kth]
            hit = np.concatenate([above, tied[: k - len(above)]])  # ties at the cut: the lowest doc indices
        order = np.lexsort((hit, -total[hit]))
        return hit[order], total[hit[order]]


_MIN_QUERIES_A_WORKER = 16
_FORKED: BM25Index | None = None  # the index a forked search worker reads (inherited, never pickled)


def _forked_retrieve(qids: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
    assert _FORKED is not None
    return _FORKED._retrieve(qids, k)


def default_cache_dir(passages_tsv: str | os.PathLike) -> Path:
    """`passages.jieba/` beside `passages.tsv`: the token cache that preprocessing and bm25_retriever.py share
    (and the BM25 index built from it, in its `index/` subfolder)."""
    path = Path(passages_tsv)
    return path.with_name(path.stem + ".jieba")


def index_passages(passages_tsv: str | os.PathLike, cache_dir: str | os.PathLike | None = "default",
                   num_workers: int = 1, k1: float = 0.9, b: float = 0.4) -> tuple[BM25Index, list[str]]:
    """A BM25 index over passages.tsv ("title text") and the passage ids in index order.

    With a cache (None: none) both the tokens and the index are reused while passages.tsv's fingerprint (path,
    size, mtime, tokenizer) and k1/b match what made them, and rebuilt otherwise."""
    from dpr.data.formats import read_passages_tsv

    fp = file_fingerprint(passages_tsv)
    pids = [pid for pid, _, _ in read_passages_tsv(passages_tsv)]
    cache = default_cache_dir(passages_tsv) if cache_dir == "default" else cache_dir
    if cache is not None:
        index = BM25Index.load(Path(cache) / "index", fp, k1, b)
        if index is not None and index.num_docs == len(pids):
            logger.info("BM25 index: reusing %s (%d passages)", Path(cache) / "index", index.num_docs)
            return index, pids
    texts = (f"{title} {text}" if title else text for _, text, title in read_passages_tsv(passages_tsv))
    corpus = cached_tokenize(texts, passages_tsv, cache, num_workers=num_workers, total=len(pids))
    index = BM25Index(corpus, k1, b, num_threads=num_workers)
    if cache is not None:
        try:
            index.save(Path(cache) / "index", fp)
        except OSError as e:  # e.g. a read-only data directory: go on without the cache
            logger.warning("BM25 index cache %s not written (%s)", Path(cache) / "index", e)
    return index, pids
