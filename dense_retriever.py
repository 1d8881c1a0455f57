"""Step 4: encode the questions, search the passage embeddings, write the submission, a rerank file and the
official metrics (when the questions carry labels); or mine hard negatives for a training file.

Outputs (each written atomically):
  --out_file        the official submission {question_id: [n_docs passage ids, best first]}; a directory (the
                    reference setup's --out_file_or_path) gets top{n_docs}_res.json inside it
  --rerank_file     JSON lines {question_id, question, passages: [{rank, passage_id, score, text, title}]}
                    (default: beside the submission, *.rerank.jsonl; texts need --ctx_file)
  --metrics_file    MRR@10, recall@1, recall@50 from the official evaluator (default: *.metrics.json), and apart
                    from them under "extra": nDCG@10 and recall@100 (null unless --n_docs >= 100)
  --trec_file       optional TREC run file `qid Q0 pid rank score tag` for ranx / pytrec_eval / trec_eval
  --hybrid_alpha A  all of these for dense + BM25 (over --ctx_file) fused: the rerank file then carries each
                    passage's dense_score and bm25_score as well (null when outside that side's --hybrid_depth)
  --mine_hard_negatives OUT   a copy of the DPR training file --qa_file whose hard_negative_ctxs are the retrieved
                    non-positives after the first --skip_top ranks

One question from the shell (no --qa_file): --query "..." prints the top --n_docs passages (rank, score, id, text on
one line; texts need --ctx_file); with no --query and stdin a terminal, a prompt asks one question per line (an
empty line or EOF ends). --index_dir D stands for --encoded_ctx_file "D/emb_shard*.npy" (what run_gen_emb.sh writes).
Bad input: one `error: FILE[:LINE]: what` line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from dpr.data.cleaning import clean_text
from dpr.data.collection_meta import sibling_ids_enabled
from dpr.data.formats import read_dpr_json, read_questions
from dpr.encode import encode_texts
from dpr.index.embeddings import Shard, expand_shards, open_shards
from dpr.index.faiss_index import INDEX_TYPES, IndexBuildError, IndexSpec, gpu_available
from dpr.index.faiss_index import GPU_MAX_K, over_gpu_limits
from dpr.index.search import SavedIndexPolicy
from dpr.models.loading import TowerOptions, load_towers
from dpr.models.source import model_source
from dpr.options import (NO_EFFECT, add_length_args, add_model_args, add_precision_args, positive_int,
                         setup_logging)
from dpr.retrieval.dense import BM25Side, check_model_pairs, hybrid_rankings, model_side, search_dense
from dpr.retrieval.hybrid import DEFAULT_ALPHA, FUSIONS, FusionConfig
from dpr.retrieval.mining import with_mined_negatives
from dpr.retrieval.passages import lookup_passages
from dpr.index.records import (FORMAT, SHARED_SETTINGS, VectorsMismatchError, check_coverage, check_pairing,
                                describe_model, older, read_record, settings_dict)
from dpr.retrieval.query_cache import load_question_vectors, questions_sha256, save_question_vectors
from dpr.retrieval.results import Retrieved, write_rerank_file, write_submission, write_trec_file
from dpr.retrieval.retriever import SHARD_GLOB, Hit, Retriever, answer_lines
from dpr.utils.cli import InputErrorExit, input_errors_exit
from dpr.utils.io import InputError, check_writable_dir, write_json
from dpr.utils.precision import default_device, resolve_amp_dtype

logger = logging.getLogger("dense_retriever")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_precision_args(parser)
    add_length_args(parser, used=("q",))
    g = parser.add_argument_group("inputs and outputs")
    g.add_argument("--qa_file", default=None,
                   help="Questions: release JSON lines (dev/test), a DPR JSON file, or a TSV (qid\\tquestion). "
                        "Without it: --query, or the interactive prompt.")
    g.add_argument("--query", default=None,
                   help="One question: print its top --n_docs passages (rank, score, id, text) and stop.")
    g.add_argument("--interactive", action="store_true",
                   help="Read questions from stdin one per line even when it is not a terminal (the prompt's loop; "
                        "an empty line or EOF ends).")
    g.add_argument("--ctx_file", default=None,
                   help="passages.tsv: passage texts for the rerank file (required for --mine_hard_negatives).")
    g.add_argument("--encoded_ctx_file", default=None,
                   help="Glob of embedding files from generate_dense_embeddings.py, e.g. 'outputs/emb_shard*.npy'.")
    g.add_argument("--index_dir", default=None,
                   help="A directory of embeddings as run_gen_emb.sh writes: the same as --encoded_ctx_file "
                        "'DIR/emb_shard*.npy'.")
    g.add_argument("--out_file", "--out_file_or_path", dest="out_file", default=None,
                   help="Submission JSON {qid: [pids]}; a directory gets top{n_docs}_res.json inside it.")
    g.add_argument("--rerank_file", default=None, help="Default: the submission path with .rerank.jsonl.")
    g.add_argument("--metrics_file", default=None, help="Default: the submission path with .metrics.json.")
    g.add_argument("--trec_file", default=None,
                   help="Also write a TREC run file (qid Q0 pid rank score tag), e.g. for ranx or trec_eval.")
    g.add_argument("--trec_tag", default="dureader-dpr", help="The run tag (last column) of --trec_file.")
    g.add_argument("--n_docs", "--n-docs", dest="n_docs", type=positive_int, default=50,
                   help="Passages kept per question (the official metric reads the top 50).")
    g.add_argument("--batch_size", type=positive_int, default=128, help="Questions per forward pass.")
    g.add_argument("--num_threads", type=positive_int, default=None,
                   help="torch CPU threads (default: 1 with --query / the prompt, where one short question per "
                        "forward pass is fastest single-threaded on a busy machine; torch's default otherwise).")
    g.add_argument("--dureader_test", action="store_true",
                   help=f"{NO_EFFECT}: the reference setup's switch for DuReader questions and the official submission plus "
                        f"rerank file, which this tool always writes, for every question format.")
    g.add_argument("--validation_workers", type=int, default=None,
                   help=f"{NO_EFFECT} (a DPR flag; encoding runs in this process).")
    g.add_argument("--index_buffer", type=int, default=None,
                   help=f"{NO_EFFECT} (a DPR flag; vectors are added in chunks of 65,536).")

    g = parser.add_argument_group("question encodings (encode on a GPU machine, search on a CPU machine)")
    g.add_argument("--q_encoding_path", default=None,
                   help="Question vectors file (.npy content, ids in PATH.qids.txt): loaded when it exists (unless "
                        "--re_encode_q), written with --encode_q_and_save.")
    g.add_argument("--encode_q_and_save", action="store_true",
                   help="Encode the questions, save them to --q_encoding_path and stop.")
    g.add_argument("--re_encode_q", action="store_true", help="Encode even if --q_encoding_path exists.")
    g.add_argument("--allow_mismatched_vectors", action="store_true",
                   help="Search passage vectors even when their record (.meta.json) says another model or other "
                        "encoder settings (pooling, normalisation, lowercasing, prefix, question length) made them "
                        "than the question tower (or the saved question vectors) and this run's flags, or an older "
                        "version wrote it, or there is none: a warning instead of an error.")
    g.add_argument("--allow_partial_index", action="store_true",
                   help="Search shards that do not cover the whole collection (a shard missing or given twice): a "
                        "warning instead of an error.")

    g = parser.add_argument_group("index (inner product everywhere)")
    g.add_argument("--index_type", choices=INDEX_TYPES, default="flat",
                   help="flat: exact (default); hnsw: graph, fast and approximate; ivfpq: compressed, for RAM-bound "
                        "collections.")
    g.add_argument("--hnsw_index", action="store_true", help="Seed alias for --index_type hnsw.")
    g.add_argument("--index_factory", default=None, help="Any faiss.index_factory string (overrides --index_type).")
    g.add_argument("--hnsw_m", type=positive_int, default=32)
    g.add_argument("--ef_construction", type=positive_int, default=80)
    g.add_argument("--ef_search", type=positive_int, default=128)
    g.add_argument("--nlist", type=positive_int, default=None, help="IVF lists (default about 4*sqrt(N)).")
    g.add_argument("--pq_m", type=positive_int, default=None, help="PQ bytes per vector (default dim/8).")
    g.add_argument("--nprobe", type=positive_int, default=32, help="IVF lists searched per question.")
    g.add_argument("--refine_k_factor", type=float, default=None,
                   help="With a refine stage (--index_factory 'IVF4096,PQ64np,RFlat'): re-rank n_docs x this many "
                        "candidates with exact scores (faiss's default 1 only reorders the same n_docs).")
    g.add_argument("--search_shard_size", type=positive_int, default=None,
                   help="Search N vectors at a time with a running top-k merge (memory bounded; with a flat index "
                        "the results equal one index over everything). Each window's index is built and dropped: "
                        "nothing is saved or reused.")
    g.add_argument("--rebuild_index", action="store_true",
                   help="Build the index again even when a saved one (beside the embeddings, e.g. "
                        "emb.index.IVF4096_PQ96np.faiss + .meta.json) matches these embeddings and settings.")
    g.add_argument("--faiss_cpu", action="store_true", help="Stay on CPU even when faiss-gpu sees a GPU.")
    g.add_argument("--faiss_fp16", action="store_true",
                   help="float16 storage for GPU indexes (a flat index takes half the GPU memory).")
    g.add_argument("--faiss_shard", action="store_true",
                   help="Split a GPU index over every visible GPU (each holds 1/N) instead of putting it all on "
                        "GPU 0.")

    g = parser.add_argument_group("hard-negative mining")
    g.add_argument("--mine_hard_negatives", default=None, metavar="OUT",
                   help="--qa_file is a DPR training file: write OUT with hard_negative_ctxs replaced by retrieved "
                        "non-positives.")
    g.add_argument("--skip_top", type=int, default=3, help="Ranks skipped before mining (false negatives hide there).")
    g.add_argument("--num_hard_negatives", type=positive_int, default=None,
                   help="Negatives kept per question (default: every one left within --n_docs).")
    g.add_argument("--sibling_ids", action="store_true",
                   help="Passage ids follow `<paragraph>-<k>`: never mine a passage cut from a positive's paragraph. "
                        "Also on when collection_meta.json beside --ctx_file says id_scheme paragraph-k.")

    g = parser.add_argument_group("hybrid retrieval: dense + BM25 (jieba + bm25s over --ctx_file, index cached beside it)")
    g.add_argument("--hybrid_alpha", type=float, nargs="?", const=DEFAULT_ALPHA, default=None, metavar="A",
                   help=f"Fuse the dense and BM25 rankings; A in [0, 1] is the weight of the dense side (alone: "
                        f"{DEFAULT_ALPHA}, chosen on held-out CMRC train questions, see README).")
    g.add_argument("--fusion", choices=FUSIONS, default=None,
                   help="convex (default): A * minmax(dense) + (1 - A) * minmax(bm25) over the union of both lists; "
                        "rrf: reciprocal-rank fusion (k=60) weighted 2A / 2(1 - A), plain RRF at A=0.5.")
    g.add_argument("--hybrid_depth", type=positive_int, default=None,
                   help="Passages taken from each side before fusing (default 100).")
    args = parser.parse_args(argv)
    if args.index_dir and args.encoded_ctx_file:
        parser.error("give --index_dir or --encoded_ctx_file, not both")
    if args.index_dir:
        args.encoded_ctx_file = str(Path(args.index_dir) / SHARD_GLOB)
    _check_hybrid_args(parser, args)
    if args.hnsw_index:
        args.index_type = "hnsw"
    _check_gpu_limits(parser, args)
    if query_mode(args):
        _check_query_args(parser, args)
        return args
    if not args.qa_file:
        parser.error("--qa_file is required (or --query / the interactive prompt, which needs stdin to be a terminal "
                "or --interactive)")
    if args.encode_q_and_save and not args.q_encoding_path:
        parser.error("--encode_q_and_save needs --q_encoding_path")
    if not args.encode_q_and_save:
        if not args.encoded_ctx_file:
            parser.error("--encoded_ctx_file (or --index_dir) is required (unless --encode_q_and_save)")
        if args.mine_hard_negatives:
            if not args.ctx_file:
                parser.error("--mine_hard_negatives needs --ctx_file (the negatives carry their texts)")
        elif not args.out_file:
            parser.error("--out_file is required (unless --encode_q_and_save or --mine_hard_negatives)")
    if args.skip_top < 0:
        parser.error("--skip_top must be >= 0")
    if not args.trec_tag or any(c.isspace() for c in args.trec_tag):
        parser.error("--trec_tag must be one word (no spaces)")
    if args.rebuild_index and args.search_shard_size:
        parser.error("--rebuild_index has no effect with --search_shard_size: windowed search builds a fresh index per "
                "window and never saves one")
    if args.refine_k_factor is not None and args.refine_k_factor < 1:
        parser.error("--refine_k_factor must be >= 1")
    return args


def query_mode(args: argparse.Namespace) -> bool:
    """True for one-question search: --query, or no --qa_file with stdin a terminal (or --interactive)."""
    return args.query is not None or args.interactive or (not args.qa_file and sys.stdin.isatty())


def _check_query_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.qa_file:
        parser.error("--query / --interactive ask questions from the shell: not with --qa_file")
    if args.query is not None and not args.query.strip():
        parser.error("--query is empty")
    if not args.encoded_ctx_file:
        parser.error("one-question search needs --index_dir (or --encoded_ctx_file)")
    batch_only = [f for f, on in (("--out_file", args.out_file), ("--rerank_file", args.rerank_file),
                                  ("--metrics_file", args.metrics_file), ("--trec_file", args.trec_file),
                                  ("--mine_hard_negatives", args.mine_hard_negatives),
                                  ("--q_encoding_path", args.q_encoding_path),
                                  ("--encode_q_and_save", args.encode_q_and_save),
                                  ("--search_shard_size", args.search_shard_size)) if on]
    if batch_only:
        parser.error(f"{', '.join(batch_only)}: batch-mode flags (with --qa_file), no effect with --query / the prompt")


def _check_hybrid_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.hybrid_alpha is None:
        if args.fusion or args.hybrid_depth:
            parser.error("--fusion and --hybrid_depth need --hybrid_alpha")
        return
    if not 0.0 <= args.hybrid_alpha <= 1.0:
        parser.error(f"--hybrid_alpha must be within [0, 1], got {args.hybrid_alpha}")
    if args.encode_q_and_save or args.mine_hard_negatives:
        parser.error("--hybrid_alpha fuses retrieval results: not with --encode_q_and_save or --mine_hard_negatives")
    if not args.ctx_file:
        parser.error("--hybrid_alpha needs --ctx_file (BM25 searches the passage texts)")


def _check_gpu_limits(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """faiss-gpu refuses k or nprobe above GPU_MAX_K when it searches: said here, with the flags that fit."""
    spec = index_spec(args)
    if not spec.use_gpu or args.encode_q_and_save:  # encoding only: nothing is searched
        return
    hybrid = args.hybrid_alpha is not None
    k = max(args.n_docs, fusion_config(args).depth) if hybrid else args.n_docs
    over = over_gpu_limits(k, spec)
    asked = ([f"{'--n_docs / --hybrid_depth' if hybrid else '--n_docs'} {k} neighbours a question"] if "k" in over
             else []) + ([f"--nprobe {args.nprobe}"] if "nprobe" in over else [])
    if asked:
        parser.error(f"{' and '.join(asked)}: faiss-gpu searches at most {GPU_MAX_K} (neighbours and IVF lists): "
                     f"lower it to {GPU_MAX_K} or less, or add --faiss_cpu to search on CPU")


def fusion_config(args: argparse.Namespace) -> FusionConfig:
    return FusionConfig(alpha=args.hybrid_alpha, method=args.fusion or "convex", depth=args.hybrid_depth or 100)


def hybrid_retrieve(shards: list[Shard], questions: list[tuple[str, str, list[str] | None]], vectors: np.ndarray,
                    args: argparse.Namespace) -> list[Retrieved]:
    """Dense and BM25 top-depth lists per question, fused; the first --n_docs kept, with both raw scores."""
    config = fusion_config(args)
    if config.depth < args.n_docs:
        logger.warning("--hybrid_depth %d < --n_docs %d: a question may get fewer than %d passages", config.depth,
                       args.n_docs, args.n_docs)
    dense = search_dense(shards, vectors, max(args.n_docs, config.depth), index_spec(args),
                         args.search_shard_size, SavedIndexPolicy(rebuild=args.rebuild_index), model_name(args))
    bm25 = BM25Side(args.ctx_file).search([text for _, text, _ in questions], config.depth)
    fused = hybrid_rankings(dense, bm25, config, args.n_docs)
    logger.info("fused (%s, alpha %.2f, depth %d)", config.method, config.alpha, config.depth)
    return [Retrieved(qid, text, r.pids, r.scores, r.parts) for (qid, text, _), r in zip(questions, fused)]


def output_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(submission, rerank file, metrics file)."""
    out = Path(args.out_file)
    if out.is_dir() or args.out_file.endswith(("/", "\\")):
        out = out / f"top{args.n_docs}_res.json"
    stem = out.with_suffix("") if out.suffix == ".json" else out
    rerank = Path(args.rerank_file) if args.rerank_file else Path(f"{stem}.rerank.jsonl")
    metrics = Path(args.metrics_file) if args.metrics_file else Path(f"{stem}.metrics.json")
    return out, rerank, metrics


def load_questions(args: argparse.Namespace) -> tuple[list[tuple[str, str, list[str] | None]], list[dict] | None]:
    """(qid, question, gold pids or None) triples; with mining also the DPR training entries themselves."""
    if args.mine_hard_negatives:
        entries = read_dpr_json(args.qa_file)
        questions = [(str(e.get("question_id", i)), clean_text(str(e["question"])), None) for i, e in enumerate(entries)]
    else:
        entries, questions = None, [(str(q), t, g) for q, t, g in read_questions(args.qa_file)]
    if not questions:
        raise InputError(args.qa_file, "no questions found")
    return questions, entries


def use_saved_questions(args: argparse.Namespace) -> bool:
    """True when the question vectors come from --q_encoding_path (the model is not loaded)."""
    return bool(args.q_encoding_path and Path(args.q_encoding_path).is_file() and not args.re_encode_q
                and not args.encode_q_and_save)


def model_name(args: argparse.Namespace) -> str:
    return model_source(args.model_file, args.pretrained_model_cfg)


def tower_options(args: argparse.Namespace) -> TowerOptions:
    return TowerOptions(model_name(args), pooling=args.pooling, lowercase=args.do_lower_case,
                        query_prefix=args.query_prefix, passage_prefix=args.passage_prefix)


def question_record(args: argparse.Namespace, settings, qids: list[str], texts: list[str]) -> dict:
    """The record saved beside --q_encoding_path: the model, the question side's settings (its prefix included) and
    length cap, and a hash of the question ids and texts."""
    side = model_side(model_name(args))
    return {"format": FORMAT, "kind": "question_vectors", "model": side["model"],
            "settings": settings_dict(settings, "query"), "max_length": args.q_sequence_length, "dtype": "float32",
            "questions_sha256": questions_sha256(qids, texts),
            "info": {**side["info"], "questions": str(args.qa_file)}}


def saved_questions_problem(args: argparse.Namespace, side: dict | None) -> str | None:
    """What keeps the saved question vectors' record from serving this run: none, an older version's, or
    settings that this run's flags or --q_sequence_length contradict; None when it serves."""
    if side is None or side.get("kind") != "question_vectors":
        return "have no record of what made them (re-encode them with --re_encode_q)"
    if older(side):
        return f"were {older(side)}: re-encode them with --re_encode_q"
    settings = side.get("settings") or {}
    flags = {"max_length": args.q_sequence_length, "pooling": args.pooling, "query_prefix": args.query_prefix,
             "lowercase": True if args.do_lower_case else None}
    found = {**settings, "max_length": side.get("max_length")}
    differ = [k for k, v in flags.items() if v is not None and found.get(k) != v]
    if differ:
        return (f"were encoded with {', '.join(f'{k} {found.get(k)!r}' for k in differ)} but this run asks for "
                f"{', '.join(f'{k} {flags[k]!r}' for k in differ)} (--q_sequence_length, --pooling, --query_prefix, "
                f"--do_lower_case): re-encode them with --re_encode_q")
    return None


def check_passage_vectors(args: argparse.Namespace, paths: list[Path]) -> None:
    """Stop unless the passage vectors' records pair with the question side (the loaded model and this run's flags,
    or the saved question vectors) and tile one collection, unless --allow_mismatched_vectors /
    --allow_partial_index."""
    if use_saved_questions(args):
        side = read_record(args.q_encoding_path)
        problem = saved_questions_problem(args, side)
        if problem and not args.allow_mismatched_vectors:
            raise VectorsMismatchError(args.q_encoding_path, f"the saved question vectors {problem}, or pass "
                                                             f"--allow_mismatched_vectors to search anyway")
        if problem:
            logger.warning("%s: the saved question vectors %s (searching anyway: --allow_mismatched_vectors)",
                           args.q_encoding_path, problem)
        label = f"the saved question vectors {args.q_encoding_path} made by {describe_model(side or {})}"
        settings = (side or {}).get("settings") or {}
        expected = {k: settings[k] for k in SHARED_SETTINGS if k in settings}
        if args.passage_prefix is not None:
            expected["passage_prefix"] = args.passage_prefix
        found = [(p, read_record(p)) for p in paths]
        check_pairing(found, side and side.get("model"), label, args.allow_mismatched_vectors, expected)
        check_coverage(found, args.allow_partial_index)
    else:
        check_model_pairs(paths, model_name(args), args.allow_mismatched_vectors, tower_options(args),
                          args.allow_partial_index)


def question_vectors(args: argparse.Namespace, qids: list[str], texts: list[str]) -> np.ndarray:
    """Load them from --q_encoding_path, or encode with the question tower (and save with --encode_q_and_save)."""
    if use_saved_questions(args):
        logger.info("question vectors from %s", args.q_encoding_path)
        return load_question_vectors(args.q_encoding_path, qids, texts)
    towers = load_towers(tower_options(args), need="question")
    q_encoder, tokenizer = towers.question, towers.tokenizer
    device = default_device()
    q_encoder.to(device)
    t0 = time.time()
    vectors = encode_texts(q_encoder, tokenizer, texts, "query", args.q_sequence_length, args.batch_size, device,
                           resolve_amp_dtype(device, args.precision), progress=True)
    logger.info("encoded %d questions in %.1fs", len(texts), time.time() - t0)
    if args.encode_q_and_save:
        save_question_vectors(args.q_encoding_path, qids, vectors,
                              question_record(args, q_encoder.settings, qids, texts))
        logger.info("saved question vectors to %s", args.q_encoding_path)
    return vectors


def index_spec(args: argparse.Namespace) -> IndexSpec:
    use_gpu = gpu_available() and not args.faiss_cpu
    return IndexSpec(index_type=args.index_type, factory=args.index_factory, hnsw_m=args.hnsw_m,
                     ef_construction=args.ef_construction, ef_search=args.ef_search, nlist=args.nlist,
                     pq_m=args.pq_m, nprobe=args.nprobe, refine_k_factor=args.refine_k_factor, use_gpu=use_gpu,
                     gpu_fp16=args.faiss_fp16, gpu_shard=args.faiss_shard)


def retrieve(shards: list[Shard], questions: list[tuple[str, str, list[str] | None]], vectors: np.ndarray,
             args: argparse.Namespace) -> list[Retrieved]:
    ranked = search_dense(shards, vectors, args.n_docs, index_spec(args), args.search_shard_size,
                          SavedIndexPolicy(rebuild=args.rebuild_index), model_name(args))
    return [Retrieved(qid, text, r.pids, r.scores) for (qid, text, _), r in zip(questions, ranked)]


def report_metrics(questions, results: list[Retrieved], path: Path, n_docs: int) -> dict | None:
    """Official metrics over the labelled questions, plus nDCG@10 / recall@100 under "extra" (printed and saved),
    or None when none has labels."""
    from dpr.eval.dureader import evaluate
    from dpr.eval.ranking import extra_metrics

    reference = {qid: set(gold) for qid, _, gold in questions if gold}
    if not reference:
        logger.info("the questions carry no labels: no metrics")
        return None
    predictions = {r.qid: r.pids for r in results if r.qid in reference}
    metrics = evaluate(reference, predictions)
    metrics["extra"] = extra_metrics(reference, predictions, n_docs)
    write_json(path, metrics)
    print(json.dumps(metrics, ensure_ascii=False, indent=2))
    logger.info("metrics written to %s", path)
    return metrics


def output_dirs(args: argparse.Namespace) -> set[Path]:
    """The directories this run will write into."""
    if args.encode_q_and_save:
        return {Path(args.q_encoding_path).parent}
    if args.mine_hard_negatives:
        return {Path(args.mine_hard_negatives).parent}
    dirs = {p.parent for p in output_paths(args)}
    return dirs | {Path(args.trec_file).parent} if args.trec_file else dirs


def run(args: argparse.Namespace) -> None:
    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    for d in output_dirs(args):  # before encoding and searching, not after
        check_writable_dir(d)
    questions, entries = load_questions(args)
    qids = [q for q, _, _ in questions]
    paths = [] if args.encode_q_and_save else expand_shards(args.encoded_ctx_file)
    if paths and not use_saved_questions(args):
        check_passage_vectors(args, paths)  # before the model is loaded
    vectors = question_vectors(args, qids, [t for _, t, _ in questions])
    if args.encode_q_and_save:
        return
    if use_saved_questions(args):
        check_passage_vectors(args, paths)
    shards = open_shards(args.encoded_ctx_file)
    if args.hybrid_alpha is not None:
        results = hybrid_retrieve(shards, questions, vectors, args)
    else:
        results = retrieve(shards, questions, vectors, args)
    if args.mine_hard_negatives:
        passages = lookup_passages(args.ctx_file, {pid for r in results for pid in r.pids})
        _check_found(args.ctx_file, passages, results)
        sibling_ids, why = sibling_ids_enabled(args.sibling_ids, args.ctx_file)
        logger.info("paragraph-sibling rule %s (%s)", "on" if sibling_ids else "off", why)
        mined, empty = with_mined_negatives(entries, [r.pids for r in results], passages, args.skip_top,
                                            args.num_hard_negatives, sibling_ids=sibling_ids)
        write_json(args.mine_hard_negatives, mined, indent=None)
        logger.info("wrote %d training questions with mined hard negatives to %s (%d got none)", len(mined),
                    args.mine_hard_negatives, empty)
        return
    submission, rerank, metrics = output_paths(args)
    passages = None
    if args.ctx_file:
        passages = lookup_passages(args.ctx_file, {pid for r in results for pid in r.pids})
        _check_found(args.ctx_file, passages, results)
    write_submission(submission, results)
    write_rerank_file(rerank, results, passages)
    logger.info("wrote %s and %s", submission, rerank)
    if args.trec_file:
        write_trec_file(args.trec_file, results, args.trec_tag)
        logger.info("wrote the TREC run file %s", args.trec_file)
    report_metrics(questions, results, metrics, args.n_docs)


def _check_found(ctx_file: str, passages: dict, results: list[Retrieved]) -> None:
    missing = {pid for r in results for pid in r.pids} - passages.keys()
    if missing:
        raise InputError(ctx_file, f"{len(missing)} retrieved passage ids are not in this file (e.g. "
                                   f"{sorted(missing)[0]!r}): embeddings from another collection?")


def open_retriever(args: argparse.Namespace) -> Retriever:
    """The Retriever API over --index_dir / --encoded_ctx_file (and --ctx_file for texts and BM25) with the flags'
    model and index options: the index is built or loaded once, only the question tower is loaded."""
    return Retriever.load(model_name(args), args.encoded_ctx_file, args.ctx_file, precision=args.precision,
                          pooling=args.pooling, lowercase=args.do_lower_case, query_prefix=args.query_prefix,
                          passage_prefix=args.passage_prefix, query_max_length=args.q_sequence_length,
                          batch_size=args.batch_size, index_spec=index_spec(args), rebuild_index=args.rebuild_index,
                          allow_mismatched_vectors=args.allow_mismatched_vectors,
                          allow_partial_index=args.allow_partial_index, num_threads=args.num_threads or 1)


def format_hits(hits: list[Hit], width: int = 100) -> str:
    """One line per passage: rank, score, id, the text (title first) cut to one line of about `width` characters."""
    lines = []
    for rank, h in enumerate(hits, 1):
        text = " ".join(" ".join(t for t in (h.title, h.text) if t).split())
        if len(text) > width:
            text = text[: width - 1] + "…"
        lines.append(f"{rank:>3}  {h.score:8.4f}  {h.pid}  {text}".rstrip())
    return "\n".join(lines) if lines else "(no passages)"


def search_kwargs(args: argparse.Namespace) -> dict:
    if args.hybrid_alpha is None:
        return {}
    config = fusion_config(args)
    return {"fusion": config.method, "hybrid_depth": config.depth}


def run_queries(args: argparse.Namespace, stdin=None, out=None) -> None:
    """--query: answer it; else the prompt: one question per line from stdin until an empty line or EOF."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    retriever = open_retriever(args)
    if args.query is not None:
        hits = retriever.search(args.query, args.n_docs, args.hybrid_alpha, **search_kwargs(args))
        print(format_hits(hits), file=out, flush=True)
        return
    tty = stdin.isatty()

    def lines():
        while True:
            if tty:
                print("question> ", end="", file=sys.stderr, flush=True)
            line = stdin.readline()
            if not line:
                return
            yield line

    if tty:
        print(f"{len(retriever)} passages; one question a line, an empty line or Ctrl-D ends.", file=sys.stderr)
    for _, hits in answer_lines(retriever, lines(), args.n_docs, args.hybrid_alpha, **search_kwargs(args)):
        print(format_hits(hits), file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0, or 2 after one `error: FILE[:LINE]: what` line on stderr for bad input."""
    args = parse_args(argv)
    setup_logging(logging.WARNING if query_mode(args) else logging.INFO)
    try:
        with input_errors_exit(IndexBuildError):
            if query_mode(args):
                run_queries(args)
            else:
                run(args)
    except InputErrorExit as e:
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
