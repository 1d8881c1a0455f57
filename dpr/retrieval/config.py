"""The typed configuration of a retrieval run (dense_retriever.py's flags, declared here once as field metadata, see
dpr/utils/flags.py), with every rule between the flags checked in one place (`RetrievalConfig.__post_init__`:
a ValueError whose message names the flags) and every derived value (the embeddings glob, the index, the fusion,
the output paths) worked out here only."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dpr.index.faiss_index import GPU_MAX_K, INDEX_TYPES, IndexSpec, gpu_available, over_gpu_limits
from dpr.options import NO_EFFECT, EncoderFlags, positive_int
from dpr.retrieval.hybrid import DEFAULT_ALPHA, FUSIONS, FusionConfig, fusion_config
from dpr.retrieval.mining import DEFAULT_DENOISE_THRESHOLD
from dpr.retrieval.rerank_config import DEFAULT_RERANK_DEPTH, MINE, RER, DenoiseFlags, RerankFlags
from dpr.utils.flags import flag, value_problem

IO = "inputs and outputs"
QV = "question encodings (encode on a GPU machine, search on a CPU machine)"
IX = "index (inner product everywhere)"
SHARD_GLOB = "emb_shard*.npy"  # what generate_dense_embeddings.py / run_gen_emb.sh write into an index directory
HYB = "hybrid retrieval: dense + BM25 (jieba + bm25s over --ctx_file, index cached beside it)"
GROUPS = (IO, QV, IX, MINE, HYB, RER)  # the --help sections, in this order


@dataclass(frozen=True)
class RetrievalConfig(EncoderFlags, RerankFlags, DenoiseFlags):
    """dense_retriever.py's settings: the shared model flags, the reranker's (dpr/retrieval/rerank_config.py), then
    its own."""

    # inputs and outputs
    qa_file: str | None = flag(None, group=IO, help=(
        "Questions: release JSON lines (dev/test), a DPR JSON file, or a TSV (qid\\tquestion). Without it: --query, "
        "or the interactive prompt."))
    query: str | None = flag(None, group=IO, help=(
        "One question: print its top --n_docs passages (rank, score, id, text) and stop."))
    interactive: bool = flag(False, group=IO, action="store_true", help=(
        "Read questions from stdin one per line even when it is not a terminal (the prompt's loop; an empty line or "
        "EOF ends)."))
    ctx_file: str | None = flag(None, group=IO, help=(
        "passages.tsv: passage texts for the rerank file (required for --mine_hard_negatives)."))
    encoded_ctx_file: str | None = flag(None, group=IO, help=(
        "Glob of embedding files from generate_dense_embeddings.py, e.g. 'outputs/emb_shard*.npy'."))
    index_dir: str | None = flag(None, group=IO, help=(
        "A directory of embeddings as run_gen_emb.sh writes: the same as --encoded_ctx_file 'DIR/emb_shard*.npy'."))
    out_file: str | None = flag(None, "--out_file_or_path", group=IO, help=(
        "Submission JSON {qid: [pids]}; a directory gets top{n_docs}_res.json inside it."))
    rerank_file: str | None = flag(None, group=IO, help="Default: the submission path with .rerank.jsonl.")
    metrics_file: str | None = flag(None, group=IO, help="Default: the submission path with .metrics.json.")
    trec_file: str | None = flag(None, group=IO, help=(
        "Also write a TREC run file (qid Q0 pid rank score tag), e.g. for ranx or trec_eval."))
    trec_tag: str = flag("dureader-dpr", group=IO, help="The run tag (last column) of --trec_file.")
    n_docs: int = flag(50, "--n-docs", group=IO, type=positive_int, help=(
        "Passages kept per question (the official metric reads the top 50)."))
    batch_size: int = flag(128, group=IO, type=positive_int, help="Questions per forward pass.")
    num_threads: int | None = flag(None, group=IO, type=positive_int, help=(
        "torch CPU threads (default: 1 with --query / the prompt, where one short question per forward pass is "
        "fastest single-threaded on a busy machine; torch's default otherwise)."))
    dureader_test: bool = flag(False, group=IO, action="store_true", help=(
        f"{NO_EFFECT}: the reference setup's switch for DuReader questions and the official submission plus rerank "
        f"file, which this tool always writes, for every question format."))
    validation_workers: int | None = flag(None, group=IO, type=int, help=(
        f"{NO_EFFECT} (a DPR flag; encoding runs in this process)."))
    index_buffer: int | None = flag(None, group=IO, type=int, help=(
        f"{NO_EFFECT} (a DPR flag; vectors are added in chunks of 65,536)."))
    # question encodings
    q_encoding_path: str | None = flag(None, group=QV, help=(
        "Question vectors file (.npy content, ids in PATH.qids.txt): loaded when it exists (unless --re_encode_q), "
        "written with --encode_q_and_save."))
    encode_q_and_save: bool = flag(False, group=QV, action="store_true", help=(
        "Encode the questions, save them to --q_encoding_path and stop."))
    re_encode_q: bool = flag(False, group=QV, action="store_true", help="Encode even if --q_encoding_path exists.")
    allow_mismatched_vectors: bool = flag(False, group=QV, action="store_true", help=(
        "Search passage vectors even when their record (.meta.json) says another model or other encoder settings "
        "(pooling, normalisation, lowercasing, prefix, question length) made them than the question tower (or the "
        "saved question vectors) and this run's flags, or an older version wrote it, or there is none: a warning "
        "instead of an error."))
    allow_partial_index: bool = flag(False, group=QV, action="store_true", help=(
        "Search shards that do not cover the whole collection (a shard missing or given twice): a warning instead "
        "of an error."))
    # index
    index_type: str = flag("flat", group=IX, choices=INDEX_TYPES, help=(
        "flat: exact (default); hnsw: graph, fast and approximate; ivfpq: compressed, for RAM-bound collections."))
    hnsw_index: bool = flag(False, group=IX, action="store_true", help="Seed alias for --index_type hnsw.")
    index_factory: str | None = flag(None, group=IX, help="Any faiss.index_factory string (overrides --index_type).")
    hnsw_m: int = flag(32, group=IX, type=positive_int)
    ef_construction: int = flag(80, group=IX, type=positive_int)
    ef_search: int = flag(128, group=IX, type=positive_int)
    nlist: int | None = flag(None, group=IX, type=positive_int, help="IVF lists (default about 4*sqrt(N)).")
    pq_m: int | None = flag(None, group=IX, type=positive_int, help="PQ bytes per vector (default dim/8).")
    nprobe: int = flag(32, group=IX, type=positive_int, help="IVF lists searched per question.")
    refine_k_factor: float | None = flag(None, group=IX, type=float, help=(
        "With a refine stage (--index_factory 'IVF4096,PQ64np,RFlat'): re-rank n_docs x this many candidates with "
        "exact scores (faiss's default 1 only reorders the same n_docs)."))
    search_shard_size: int | None = flag(None, group=IX, type=positive_int, help=(
        "Search N vectors at a time with a running top-k merge (memory bounded; with a flat index the results "
        "equal one index over everything). Each window's index is built and dropped: nothing is saved or reused."))
    rebuild_index: bool = flag(False, group=IX, action="store_true", help=(
        "Build the index again even when a saved one (beside the embeddings, e.g. emb.index.IVF4096_PQ96np.faiss + "
        ".meta.json) matches these embeddings and settings."))
    faiss_cpu: bool = flag(False, group=IX, action="store_true", help=(
        "Stay on CPU even when faiss-gpu sees a GPU."))
    faiss_fp16: bool = flag(False, group=IX, action="store_true", help=(
        "float16 storage for GPU indexes (a flat index takes half the GPU memory)."))
    faiss_shard: bool = flag(False, group=IX, action="store_true", help=(
        "Split a GPU index over every visible GPU (each holds 1/N) instead of putting it all on GPU 0."))
    # mining
    mine_hard_negatives: str | None = flag(None, group=MINE, metavar="OUT", help=(
        "--qa_file is a DPR training file: write OUT with hard_negative_ctxs replaced by retrieved non-positives."))
    skip_top: int = flag(3, group=MINE, type=int, help="Ranks skipped before mining (false negatives hide there).")
    num_hard_negatives: int | None = flag(None, group=MINE, type=positive_int, help=(
        "Negatives kept per question (default: every one left within --n_docs)."))
    sibling_ids: bool = flag(False, group=MINE, action="store_true", help=(
        "Passage ids follow `<paragraph>-<k>`: never mine a passage cut from a positive's paragraph. Also on when "
        "collection_meta.json beside --ctx_file says id_scheme paragraph-k."))
    # hybrid
    hybrid_alpha: float | None = flag(None, group=HYB, type=float, nargs="?", const=DEFAULT_ALPHA, metavar="A", help=(
        f"Fuse the dense and BM25 rankings; A in [0, 1] is the weight of the dense side (alone: {DEFAULT_ALPHA}, "
        f"chosen on held-out CMRC train questions, see docs/benchmarks.md)."))
    fusion: str | None = flag(None, group=HYB, choices=FUSIONS, help=(
        "convex (default): A * dense' + (1 - A) * bm25' over the union of both lists (dense min-max scaled; BM25 "
        "divided by its best when its list is shorter than --hybrid_depth, so holds every match, else min-max; see "
        "dpr/retrieval/hybrid.py); rrf: reciprocal-rank fusion (k=60) weighted 2A / 2(1 - A), plain RRF at A=0.5."))
    hybrid_depth: int | None = flag(None, group=HYB, type=positive_int, help=(
        f"Passages taken from each side before fusing (default {FusionConfig.depth})."))

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(problem)

    # --- derived values ------------------------------------------------------------------------------------------

    @property
    def query_mode(self) -> bool:
        """One-question search (--query, or the prompt) rather than a batch over --qa_file."""
        return self.query is not None or self.interactive

    @property
    def embeddings(self) -> str | None:
        """The embeddings glob: --encoded_ctx_file, or DIR/emb_shard*.npy for --index_dir."""
        return str(Path(self.index_dir) / SHARD_GLOB) if self.index_dir else self.encoded_ctx_file

    @property
    def fusion_config(self) -> FusionConfig | None:
        """The fusion of --hybrid_alpha / --fusion / --hybrid_depth (None without --hybrid_alpha)."""
        return fusion_config(self.hybrid_alpha, self.fusion, self.hybrid_depth)

    @property
    def rerank_depth(self) -> int | None:
        """First-stage passages reranked per question (None: no reranking; mining with --reranker only filters)."""
        if not self.reranker or self.mine_hard_negatives:
            return None
        return self.reranker_depth or DEFAULT_RERANK_DEPTH

    @property
    def first_stage_depth(self) -> int:
        """Passages the first stage (dense or fused) returns per question: --n_docs, or the reranking depth."""
        return max(self.n_docs, self.rerank_depth or 0)

    @property
    def denoise(self) -> float | None:
        """The denoising threshold of --mine_hard_negatives with --reranker (None: no denoising)."""
        if not (self.reranker and self.mine_hard_negatives):
            return None
        return DEFAULT_DENOISE_THRESHOLD if self.denoise_threshold is None else self.denoise_threshold

    @property
    def search_depth(self) -> int:
        """Neighbours searched per question: the first stage's depth, or --hybrid_depth when fusing takes more."""
        fusion = self.fusion_config
        return max(self.first_stage_depth, fusion.depth) if fusion else self.first_stage_depth

    @property
    def saved_questions(self) -> bool:
        """True when the question vectors come from --q_encoding_path (the model is not loaded)."""
        return bool(self.q_encoding_path and Path(self.q_encoding_path).is_file() and not self.re_encode_q
                    and not self.encode_q_and_save)

    def index_spec(self) -> IndexSpec:
        return IndexSpec(index_type="hnsw" if self.hnsw_index else self.index_type, factory=self.index_factory,
                         hnsw_m=self.hnsw_m, ef_construction=self.ef_construction, ef_search=self.ef_search,
                         nlist=self.nlist, pq_m=self.pq_m, nprobe=self.nprobe, refine_k_factor=self.refine_k_factor,
                         use_gpu=gpu_available() and not self.faiss_cpu, gpu_fp16=self.faiss_fp16,
                         gpu_shard=self.faiss_shard)

    def output_paths(self) -> tuple[Path, Path, Path]:
        """(submission, rerank file, metrics file)."""
        out = Path(self.out_file)
        if out.is_dir() or self.out_file.endswith(("/", "\\")):
            out = out / f"top{self.n_docs}_res.json"
        stem = out.with_suffix("") if out.suffix == ".json" else out
        rerank = Path(self.rerank_file) if self.rerank_file else Path(f"{stem}.rerank.jsonl")
        metrics = Path(self.metrics_file) if self.metrics_file else Path(f"{stem}.metrics.json")
        return out, rerank, metrics

    def output_dirs(self) -> set[Path]:
        """The directories this run will write into."""
        if self.encode_q_and_save:
            return {Path(self.q_encoding_path).parent}
        if self.mine_hard_negatives:
            return {Path(self.mine_hard_negatives).parent}
        dirs = {p.parent for p in self.output_paths()}
        return dirs | {Path(self.trec_file).parent} if self.trec_file else dirs

    # --- the rules between the flags -----------------------------------------------------------------------------

    def _problem(self) -> str | None:
        value = value_problem(self)  # each flag's own rule (positive_int, choices), as the parser applies it
        if value:
            return value
        if self.index_dir and self.encoded_ctx_file:
            return "give --index_dir or --encoded_ctx_file, not both"
        problem = self._hybrid_problem() or self._reranker_problem() or self._gpu_problem()
        if problem or self.query_mode:
            return problem or self._query_problem()
        if not self.qa_file:
            return ("--qa_file is required (or --query / the interactive prompt, which needs stdin to be a terminal "
                    "or --interactive)")
        if self.encode_q_and_save and not self.q_encoding_path:
            return "--encode_q_and_save needs --q_encoding_path"
        if not self.encode_q_and_save:
            if not self.embeddings:
                return "--encoded_ctx_file (or --index_dir) is required (unless --encode_q_and_save)"
            if self.mine_hard_negatives and not self.ctx_file:
                return "--mine_hard_negatives needs --ctx_file (the negatives carry their texts)"
            if not self.mine_hard_negatives and not self.out_file:
                return "--out_file is required (unless --encode_q_and_save or --mine_hard_negatives)"
        if self.skip_top < 0:
            return "--skip_top must be >= 0"
        if not self.trec_tag or any(c.isspace() for c in self.trec_tag):
            return "--trec_tag must be one word (no spaces)"
        if self.rebuild_index and self.search_shard_size:
            return ("--rebuild_index has no effect with --search_shard_size: windowed search builds a fresh index per "
                    "window and never saves one")
        if self.refine_k_factor is not None and self.refine_k_factor < 1:
            return "--refine_k_factor must be >= 1"
        return None

    def _query_problem(self) -> str | None:
        if self.qa_file:
            return "--query / --interactive ask questions from the shell: not with --qa_file"
        if self.query is not None and not self.query.strip():
            return "--query is empty"
        if not self.embeddings:
            return "one-question search needs --index_dir (or --encoded_ctx_file)"
        batch_only = [f for f, on in (("--out_file", self.out_file), ("--rerank_file", self.rerank_file),
                                      ("--metrics_file", self.metrics_file), ("--trec_file", self.trec_file),
                                      ("--mine_hard_negatives", self.mine_hard_negatives),
                                      ("--q_encoding_path", self.q_encoding_path),
                                      ("--encode_q_and_save", self.encode_q_and_save),
                                      ("--search_shard_size", self.search_shard_size)) if on]
        if batch_only:
            return f"{', '.join(batch_only)}: batch-mode flags (with --qa_file), no effect with --query / the prompt"
        return None

    def _hybrid_problem(self) -> str | None:
        if self.hybrid_alpha is None:
            return "--fusion and --hybrid_depth need --hybrid_alpha" if self.fusion or self.hybrid_depth else None
        if not 0.0 <= self.hybrid_alpha <= 1.0:
            return f"--hybrid_alpha must be within [0, 1], got {self.hybrid_alpha}"
        if self.encode_q_and_save or self.mine_hard_negatives:
            return "--hybrid_alpha fuses retrieval results: not with --encode_q_and_save or --mine_hard_negatives"
        if not self.ctx_file:
            return "--hybrid_alpha needs --ctx_file (BM25 searches the passage texts)"
        return None

    def _reranker_problem(self) -> str | None:
        if not self.reranker:
            given = [f for f, on in (("--reranker_depth", self.reranker_depth),
                                     ("--reranker_batch_size", self.reranker_batch_size),
                                     ("--denoise_threshold", self.denoise_threshold is not None)) if on]
            return f"{', '.join(given)} need --reranker" if given else None
        if self.encode_q_and_save:
            return "--reranker: not with --encode_q_and_save (nothing is searched)"
        if not self.ctx_file:
            return "--reranker needs --ctx_file (the reranker reads the passages' texts)"
        if self.mine_hard_negatives and self.reranker_depth:
            return ("--reranker_depth has no effect with --mine_hard_negatives: mining with --reranker scores every "
                    "mined candidate and only drops likely positives, it does not rerank")
        if self.denoise_threshold is not None:
            if not self.mine_hard_negatives:
                return "--denoise_threshold needs --mine_hard_negatives (it filters mined negatives)"
            return self.threshold_problem()
        return None

    def _gpu_problem(self) -> str | None:
        """faiss-gpu refuses k or nprobe above GPU_MAX_K when it searches: said here, with the flags that fit."""
        spec = self.index_spec()
        if not spec.use_gpu or self.encode_q_and_save:  # encoding only: nothing is searched
            return None
        hybrid = self.hybrid_alpha is not None
        k = self.search_depth
        over = over_gpu_limits(k, spec)
        asked = ([f"{'--n_docs / --hybrid_depth' if hybrid else '--n_docs'} {k} neighbours a question"]
                 if "k" in over else []) + ([f"--nprobe {self.nprobe}"] if "nprobe" in over else [])
        if asked:
            return (f"{' and '.join(asked)}: faiss-gpu searches at most {GPU_MAX_K} (neighbours and IVF lists): "
                    f"lower it to {GPU_MAX_K} or less, or add --faiss_cpu to search on CPU")
        return None
