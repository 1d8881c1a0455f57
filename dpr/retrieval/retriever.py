"""The Python API: load a model (and its saved index, or build one from a passages.tsv), then ask questions.

    from dpr import Retriever
    r = Retriever.load("demo_outputs/checkpoints/dpr_biencoder.0.40", index_dir="demo_outputs/emb_finetuned",
                       passages="demo_outputs/data/search.tsv")
    for hit in r.search("北京大学是哪一年成立的？", k=5):
        print(hit.score, hit.pid, hit.text)

The index, the passage rows and the BM25 index (for `hybrid_alpha`) are built or loaded once and kept; with a saved
index only the question tower is loaded. Retrieval goes through dpr/retrieval/dense.py, the same functions
dense_retriever.py uses, so both rank alike.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from dpr.index.embeddings import Shard, expand_shards, open_shards, save_shard, shard_paths
from dpr.index.faiss_index import IndexSpec, gpu_available
from dpr.index.records import passage_record, record_path, source_fingerprint
from dpr.index.search import SavedIndexPolicy
from dpr.retrieval.config import SHARD_GLOB, RetrievalConfig
from dpr.retrieval.dense import (
    BM25Side,
    DenseIndex,
    Ranking,
    check_model_pairs,
    check_source,
    hybrid_search,
    search_dense,
)
from dpr.retrieval.hybrid import fusion_config
from dpr.retrieval.passages import PassageStore, check_in_collection
from dpr.retrieval.rerank_config import DEFAULT_RERANK_DEPTH
from dpr.utils.flags import value_problem
from dpr.utils.io import InputError, publish_then_mark

if TYPE_CHECKING:
    from dpr.retrieval.reranker import Reranker

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Hit:
    """One retrieved passage. `score` is the dense inner product, or the fused score with hybrid search (then
    `dense_score` / `bm25_score` hold the raw scores, None where the passage was outside that side's list), or with
    a reranker the reranked score (then `first_stage_score` holds the dense or fused score and `reranker_score` the
    cross-encoder's logit, None below the reranking depth)."""

    pid: str
    score: float
    text: str | None = None  # None when the Retriever has no passages file
    title: str | None = None
    dense_score: float | None = None
    bm25_score: float | None = None
    first_stage_score: float | None = None
    reranker_score: float | None = None


@dataclass(frozen=True)
class RetrieverOptions:
    """How questions and passages are encoded and searched (see Retriever.load for each field)."""

    precision: str = "auto"
    pooling: str | None = None
    lowercase: bool = False
    query_prefix: str | None = None
    passage_prefix: str | None = None
    query_max_length: int = 32
    passage_max_length: int = 384
    batch_size: int = 64
    index_spec: IndexSpec = field(default_factory=lambda: IndexSpec(use_gpu=gpu_available()))
    rebuild_index: bool = False
    allow_mismatched_vectors: bool = False
    num_threads: int | None = None
    allow_partial_index: bool = False
    search_shard_size: int | None = None  # search that many vectors at a time (an index per window, none saved)
    reranker_depth: int = DEFAULT_RERANK_DEPTH  # with a reranker: first-stage passages it scores per question

    def __post_init__(self) -> None:
        """The rules dense_retriever.py's flags of the same names state (RetrievalConfig's metadata: positive_int,
        choices), for these fields and the index spec's, so the API and the script refuse alike."""
        problem = (value_problem(self, RetrievalConfig, "{}")
                   or value_problem(self.index_spec, RetrievalConfig, "index_spec.{}"))
        if problem:
            raise ValueError(problem)


def index_pattern(index_dir: str | os.PathLike) -> str:
    """The embedding files of an index: `DIR/emb_shard*.npy` for a directory, else the glob (or file) itself."""
    d = Path(index_dir)
    return str(d / SHARD_GLOB) if d.is_dir() else str(index_dir)


class Retriever:
    """A question tower, an index over passage vectors (none: it only encodes), and optionally the passages' texts.
    Build with `load`."""

    def __init__(self, model: str, options: RetrieverOptions, passages: str | os.PathLike | None = None):
        self.model = str(model)
        self.options = options
        self.passages_file = None if passages is None else Path(passages)
        self._store = PassageStore(passages) if passages is not None else None
        self._question = self._passage = self._tokenizer = None
        self._index: DenseIndex | None = None
        self._shards: list[Shard] = []
        self._bm25: BM25Side | None = None
        self._built: tuple[list[str], np.ndarray] | None = None  # vectors encoded here (not read from disk)
        self.reranker: Reranker | None = None
        import torch

        from dpr.utils.precision import default_device, resolve_amp_dtype

        if options.num_threads:
            torch.set_num_threads(options.num_threads)

        self.device = default_device()
        self.amp_dtype = resolve_amp_dtype(self.device, options.precision)

    @classmethod
    def load(cls, model: str | os.PathLike = "multilingual-e5-small", index_dir: str | os.PathLike | None = None,
             passages: str | os.PathLike | None = None, *, precision: str = "auto", pooling: str | None = None,
             lowercase: bool = False, query_prefix: str | None = None, passage_prefix: str | None = None,
             query_max_length: int = 32, passage_max_length: int = 384, batch_size: int = 64,
             index_spec: IndexSpec | None = None, rebuild_index: bool = False,
             allow_mismatched_vectors: bool = False, num_threads: int | None = None,
             allow_partial_index: bool = False, search_shard_size: int | None = None,
             reranker: str | os.PathLike | Reranker | None = None, reranker_depth: int = DEFAULT_RERANK_DEPTH,
             reranker_batch_size: int | None = None) -> Retriever:
        """A ready Retriever.

        model: a training checkpoint (dpr_biencoder.E.I), an exported encoder directory, a sentence-transformers
            directory or 'multilingual-e5-small'.
        index_dir: a directory of emb_shard*.npy (+ .ids.txt, .meta.json records) as run_gen_emb.sh writes, or a
            glob of such files. Their records must say this model made them, with the encoder settings these
            options give the passage tower (else InputError, unless allow_mismatched_vectors), and the shards must
            cover their collection (else InputError, unless allow_partial_index). A directory with no embeddings
            and `passages` given: the passages are encoded and saved there (the same files
            generate_dense_embeddings.py writes). A path that does not exist is an InputError saying so.
        passages: the passages.tsv (id, text, title) the vectors were made from (with index_dir: the file their
            records name, by size and hash, else InputError unless allow_mismatched_vectors): hits carry its texts,
            hybrid search runs BM25 over it; with no index_dir the passages are encoded now and kept in memory. With
            neither index_dir nor passages the Retriever only encodes (encode_queries / encode_passages; search
            says what it lacks).
        precision: auto | fp32 | bf16 | fp16 (autocast; auto = bf16 on CPUs fast at it, fp16 on CUDA).
        pooling, lowercase, query_prefix, passage_prefix: override what the model stores (as the scripts' flags).
        query_max_length / passage_max_length: token caps; batch_size: texts per forward pass.
        index_spec: the faiss index (default flat, exact; a trained one is saved beside the embeddings and reused).
        num_threads: torch's CPU threads for the whole process (torch.set_num_threads; None leaves them). One
            question at a time is fastest with 1 on a busy machine (measured in docs/benchmarks.md, section 2).
        search_shard_size: search that many vectors at a time with a running top-k merge (memory bounded; an index
            per window, built and dropped at each search, none saved), as dense_retriever.py --search_shard_size.
        reranker: a cross-encoder directory (train_reranker.py, or a sentence-transformers CrossEncoder) or a loaded
            Reranker: `search` then scores the first reranker_depth passages of the dense (or fused) list with it
            and orders them by its score, the rest following in first-stage order (dpr.retrieval.reranker); each
            Hit keeps its first-stage score in `first_stage_score`. Needs `passages` (the texts it reads). The
            reranker uses its own recorded pair settings; reranker_batch_size: pairs per forward pass (default:
            the device's), its precision is `precision`.
        """
        options = RetrieverOptions(precision, pooling, lowercase, query_prefix, passage_prefix, query_max_length,
                                   passage_max_length, batch_size, index_spec or IndexSpec(use_gpu=gpu_available()),
                                   rebuild_index, allow_mismatched_vectors, num_threads, allow_partial_index,
                                   search_shard_size, reranker_depth)
        if reranker is not None and passages is None:
            raise ValueError("a reranker reads the passages' texts: give passages= as well")
        if reranker_depth < 1:
            raise ValueError(f"reranker_depth must be >= 1, got {reranker_depth}")
        encoder_only = index_dir is None and passages is None
        build = not encoder_only and index_dir is None or (passages is not None and Path(index_dir).is_dir()
                                      and not list(Path(index_dir).glob(SHARD_GLOB)))
        if not build and not encoder_only:
            paths = expand_shards(index_pattern(index_dir))
            check_model_pairs(paths, str(model), allow_mismatched_vectors, _tower_options(str(model), options),
                              allow_partial_index)
            if passages is not None:
                check_source(paths, passages, allow_mismatched_vectors)
        retriever = cls(model, options, passages)  # (the pairing is checked before any model is loaded)
        if build:
            retriever._build_index()
            if index_dir is not None:
                retriever.save_index(index_dir)
        elif not encoder_only:
            retriever._open_index(open_shards(index_pattern(index_dir)))
        retriever._question_tower()
        if reranker is not None:
            from dpr.retrieval.reranker import Reranker

            retriever.reranker = (reranker if isinstance(reranker, Reranker) else
                                  Reranker.load(reranker, batch_size=reranker_batch_size, precision=precision))
        return retriever

    # --- encoding ------------------------------------------------------------------------------------------------

    def _towers_options(self):
        return _tower_options(self.model, self.options)

    def _question_tower(self):
        if self._question is None:
            from dpr.models.loading import load_towers

            towers = load_towers(self._towers_options(), need="question")
            self._question, self._tokenizer = towers.question.to(self.device).eval(), towers.tokenizer
        return self._question

    def _passage_tower(self):
        if self._passage is None:
            from dpr.models.loading import load_towers

            towers = load_towers(self._towers_options(), need="passage")
            self._passage, self._tokenizer = towers.passage.to(self.device).eval(), towers.tokenizer
        return self._passage

    def _encode(self, encoder, texts: list[str], kind: str, max_length: int) -> np.ndarray:
        from dpr.encode import encode_texts

        return encode_texts(encoder, self._tokenizer, texts, kind, max_length, self.options.batch_size, self.device,
                            self.amp_dtype)

    def encode_queries(self, texts: str | list[str]) -> np.ndarray:
        """float32 [N, dim] question vectors (the question tower, its prefix and normalisation)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._encode(self._question_tower(), texts, "query", self.options.query_max_length)

    def encode_passages(self, texts: str | list[str], titles: list[str] | None = None) -> np.ndarray:
        """float32 [N, dim] passage vectors (the passage tower; a title is put before its text, as in training)."""
        from dpr.data.formats import passage_input

        texts = [texts] if isinstance(texts, str) else list(texts)
        inputs = [passage_input(t, title) for t, title in zip(texts, titles or [""] * len(texts), strict=True)]
        return self._encode(self._passage_tower(), inputs, "passage", self.options.passage_max_length)

    # --- the index -----------------------------------------------------------------------------------------------

    def _open_index(self, shards: list[Shard], save: bool = True) -> None:
        if self._store is not None:
            missing = next((pid for shard in shards for pid in shard.ids if pid not in self._store), None)
            check_in_collection(self._store.path, [] if missing is None else [missing], str(shards[0].path.parent))
        self._shards = shards
        if not self.options.search_shard_size:
            self._index = DenseIndex(shards, self.options.index_spec,
                                     SavedIndexPolicy(save=save, rebuild=self.options.rebuild_index))

    def _dense(self, vectors: np.ndarray, k: int) -> list[Ranking]:
        """Top-k passages per question vector: the index built once, or windows of search_shard_size."""
        if self._index is not None:
            return self._index.search(vectors, k, self.model)
        return search_dense(self._shards, vectors, k, self.options.index_spec, self.options.search_shard_size,
                            SavedIndexPolicy(save=False), self.model)

    def _build_index(self) -> None:
        """Encode every passage of the passages file with the passage tower and index the vectors in memory."""
        from dpr.data.formats import read_passages_tsv

        rows = list(read_passages_tsv(self.passages_file))
        if not rows:
            raise InputError(self.passages_file, "no passages")
        logger.info("encoding %d passages of %s (no saved index)", len(rows), self.passages_file)
        vectors = self.encode_passages([t for _, t, _ in rows], [title for _, _, title in rows])
        ids = [pid for pid, _, _ in rows]
        self._built = (ids, vectors)
        self._open_index([Shard(self.passages_file, ids, vectors)], save=False)

    def save_index(self, directory: str | os.PathLike) -> Path:
        """Write the vectors encoded here as `directory/emb_shard0.npy` + .ids.txt + .meta.json, the files and record
        generate_dense_embeddings.py writes (so the scripts and `load(index_dir=...)` reuse them)."""
        from dpr.models.fingerprint import model_fingerprint

        if self._built is None:
            raise ValueError("this Retriever searches saved embeddings: there is nothing new to save")
        ids, vectors = self._built
        fingerprint = model_fingerprint(self.model)
        if fingerprint is None:
            raise InputError(self.model, "the model's files are not on this disk, so the vectors cannot record it")
        record = passage_record(fingerprint, self._passage_tower().settings, self.options.passage_max_length,
                                source_fingerprint(self.passages_file),
                                {"shard_id": 0, "num_shards": 1, "start": 0, "stop": len(ids), "total": len(ids)},
                                "float32",
                                {"model": self.model, "source": str(self.passages_file)})
        npy, _ = shard_paths(Path(directory) / "emb_shard0")
        with publish_then_mark(record_path(npy), {**record, "dim": int(vectors.shape[1])}):
            save_shard(Path(directory) / "emb_shard0", ids, vectors)
        logger.info("saved %d passage vectors to %s", len(ids), npy)
        return npy

    # --- search --------------------------------------------------------------------------------------------------

    @overload
    def search(self, questions: str, k: int = 10, hybrid_alpha: float | None = None, *, fusion: str | None = None,
               hybrid_depth: int | None = None) -> list[Hit]: ...

    @overload
    def search(self, questions: list[str], k: int = 10, hybrid_alpha: float | None = None, *,
               fusion: str | None = None, hybrid_depth: int | None = None) -> list[list[Hit]]: ...

    def search(self, questions, k=10, hybrid_alpha=None, *, fusion=None, hybrid_depth=None):
        """The top-k passages of one question (a list of Hit) or of each of a list of questions (a list of lists).

        hybrid_alpha: fuse with BM25 over the passages file (dense weight in [0, 1]; fusion 'convex' or 'rrf';
        each side contributes its first hybrid_depth passages; left None, each takes FusionConfig's default), as
        dense_retriever.py --hybrid_alpha does.
        """
        single = isinstance(questions, str)
        texts = [questions] if single else list(questions)
        if not texts:
            return []
        rankings = self.rank(texts, k, hybrid_alpha, fusion=fusion, hybrid_depth=hybrid_depth)
        found = self._store.get({pid for r in rankings for pid in r.pids}) if self._store is not None else {}
        out = []
        for r in rankings:
            hits = []
            for i, (pid, score) in enumerate(zip(r.pids, r.scores)):
                text, title = found.get(pid, (None, None))
                part = r.parts[i] if r.parts else {}
                hits.append(Hit(pid, float(score), text, title, part.get("dense_score"), part.get("bm25_score"),
                                part.get("first_stage_score"), part.get("reranker_score")))
            out.append(hits)
        return out[0] if single else out

    def rank(self, questions: list[str], k: int = 10, hybrid_alpha: float | None = None, *,
             fusion: str | None = None, hybrid_depth: int | None = None,
             vectors: np.ndarray | None = None) -> list[Ranking]:
        """Passage ids and scores per question (no texts): what `search` returns, before the texts are read.
        vectors: the questions' vectors when they are at hand (e.g. dpr.retrieval.query_cache's saved ones).
        With a reranker, the first-stage list is searched max(k, reranker_depth) deep and reranked, then cut to k."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not self._shards:
            raise ValueError("this Retriever was loaded without index_dir or passages: it encodes (encode_queries, "
                             "encode_passages) but has no collection to search; load it with index_dir= and/or "
                             "passages=")
        config = fusion_config(hybrid_alpha, fusion, hybrid_depth)
        if config is not None and self.passages_file is None:
            raise ValueError("hybrid search runs BM25 over the passage texts: load the Retriever with passages=")
        vectors = self.encode_queries(questions) if vectors is None else vectors
        depth = max(k, self.options.reranker_depth) if self.reranker is not None else k
        if config is None:
            first = self._dense(vectors, depth)
        else:
            if self._bm25 is None:
                self._bm25 = BM25Side(self.passages_file)
            first = hybrid_search(lambda d: self._dense(vectors, d), self._bm25, questions, depth, config)
        if self.reranker is None:
            return first
        from dpr.retrieval.reranker import rerank_many

        depth = self.options.reranker_depth
        texts = self._store.get({pid for r in first for pid in r.pids[:depth]})
        return [Ranking(*lists) for lists in rerank_many(self.reranker, questions, first, texts, depth, k)]

    def __len__(self) -> int:
        """Passages in the index."""
        return sum(len(shard.ids) for shard in self._shards)


def _tower_options(model: str, o: RetrieverOptions):
    """The TowerOptions of a Retriever's model and options (for loading and for the pairing check alike)."""
    from dpr.models.loading import TowerOptions

    return TowerOptions(model, pooling=o.pooling, lowercase=o.lowercase, query_prefix=o.query_prefix,
                        passage_prefix=o.passage_prefix)


def answer_lines(retriever: Retriever, lines: Iterable[str], k: int, hybrid_alpha: float | None = None,
                 **search_kwargs) -> Iterable[tuple[str, list[Hit]]]:
    """(question, hits) for each line until an empty line or the end (the interactive prompt's loop)."""
    for line in lines:
        question = line.strip()
        if not question:
            return
        yield question, retriever.search(question, k, hybrid_alpha, **search_kwargs)
