"""Step 4: encode the questions, search the passage embeddings, write the submission, a rerank file and the
official metrics (when the questions carry labels); or mine hard negatives for a training file.

Outputs (each written atomically):
  --out_file        the official submission {question_id: [n_docs passage ids, best first]}; a directory (the
                    seed's --out_file_or_path) gets top{n_docs}_res.json inside it
  --rerank_file     JSON lines {question_id, question, passages: [{rank, passage_id, score, text, title}]}
                    (default: beside the submission, *.rerank.jsonl; texts need --ctx_file)
  --metrics_file    MRR@10, recall@1, recall@50 from the official evaluator (default: *.metrics.json)
  --hybrid_alpha A  all three for dense + BM25 (over --ctx_file) fused: the rerank file then carries each
                    passage's dense_score and bm25_score as well (null when outside that side's --hybrid_depth)
  --mine_hard_negatives OUT   a copy of the DPR training file --qa_file whose hard_negative_ctxs are the retrieved
                    non-positives after the first --skip_top ranks
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from dpr.data.cleaning import clean_text
from dpr.data.formats import read_dpr_json, read_questions
from dpr.encode import encode_texts
from dpr.index.embeddings import Shard, open_shards
from dpr.index.faiss_index import INDEX_TYPES, IndexBuildError, IndexSpec, gpu_available
from dpr.index.search import search_shards
from dpr.models.loading import load_encoder_pair
from dpr.options import add_length_args, add_model_args, add_precision_args, positive_int, setup_logging
from dpr.retrieval.hybrid import DEFAULT_ALPHA, FUSIONS, FusionConfig, fuse
from dpr.retrieval.mining import with_mined_negatives
from dpr.retrieval.passages import lookup_passages
from dpr.retrieval.query_cache import load_question_vectors, save_question_vectors
from dpr.retrieval.results import Retrieved, write_rerank_file, write_submission
from dpr.utils.io import InputError, check_writable_dir, write_json
from dpr.utils.precision import default_device, resolve_amp_dtype

logger = logging.getLogger("dense_retriever")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_precision_args(p)
    add_length_args(p)
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--qa_file", required=True,
                   help="Questions: release JSON lines (dev/test), a DPR JSON file, or a TSV (qid\\tquestion).")
    g.add_argument("--ctx_file", default=None,
                   help="passages.tsv: passage texts for the rerank file (required for --mine_hard_negatives).")
    g.add_argument("--encoded_ctx_file", default=None,
                   help="Glob of embedding files from generate_dense_embeddings.py, e.g. 'outputs/emb_shard*.npy'.")
    g.add_argument("--out_file", "--out_file_or_path", dest="out_file", default=None,
                   help="Submission JSON {qid: [pids]}; a directory gets top{n_docs}_res.json inside it.")
    g.add_argument("--rerank_file", default=None, help="Default: the submission path with .rerank.jsonl.")
    g.add_argument("--metrics_file", default=None, help="Default: the submission path with .metrics.json.")
    g.add_argument("--n_docs", "--n-docs", dest="n_docs", type=positive_int, default=50,
                   help="Passages kept per question (the official metric reads the top 50).")
    g.add_argument("--batch_size", type=positive_int, default=128, help="Questions per forward pass.")
    g.add_argument("--dureader_test", action="store_true",
                   help="Seed compatibility: --qa_file holds DuReader questions and the output is the official "
                        "submission plus the rerank file. That is what this tool always writes, for every format.")
    g.add_argument("--validation_workers", type=int, default=None, help="Accepted for seed compatibility; unused.")
    g.add_argument("--index_buffer", type=int, default=None, help="Accepted for seed compatibility; unused.")

    g = p.add_argument_group("question encodings (encode on a GPU machine, search on a CPU machine)")
    g.add_argument("--q_encoding_path", default=None,
                   help="Question vectors file (.npy content, ids in PATH.qids.txt): loaded when it exists (unless "
                        "--re_encode_q), written with --encode_q_and_save.")
    g.add_argument("--encode_q_and_save", action="store_true",
                   help="Encode the questions, save them to --q_encoding_path and stop.")
    g.add_argument("--re_encode_q", action="store_true", help="Encode even if --q_encoding_path exists.")

    g = p.add_argument_group("index (inner product everywhere)")
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
    g.add_argument("--nprobe", type=positive_int, default=32)
    g.add_argument("--search_shard_size", type=positive_int, default=None,
                   help="Search N vectors at a time with a running top-k merge (memory bounded; with a flat index "
                        "the results equal one index over everything).")
    g.add_argument("--faiss_cpu", action="store_true", help="Stay on CPU even when faiss-gpu sees a GPU.")
    g.add_argument("--faiss_fp16", action="store_true", help="float16 storage for GPU indexes.")

    g = p.add_argument_group("hard-negative mining")
    g.add_argument("--mine_hard_negatives", default=None, metavar="OUT",
                   help="--qa_file is a DPR training file: write OUT with hard_negative_ctxs replaced by retrieved "
                        "non-positives.")
    g.add_argument("--skip_top", type=int, default=3, help="Ranks skipped before mining (false negatives hide there).")
    g.add_argument("--num_hard_negatives", type=positive_int, default=None,
                   help="Negatives kept per question (default: every one left within --n_docs).")

    g = p.add_argument_group("hybrid retrieval: dense + BM25 (jieba + bm25s over --ctx_file, index cached beside it)")
    g.add_argument("--hybrid_alpha", type=float, nargs="?", const=DEFAULT_ALPHA, default=None, metavar="A",
                   help=f"Fuse the dense and BM25 rankings; A in [0, 1] is the weight of the dense side (alone: "
                        f"{DEFAULT_ALPHA}, chosen on held-out CMRC train questions, see README).")
    g.add_argument("--fusion", choices=FUSIONS, default=None,
                   help="convex (default): A * minmax(dense) + (1 - A) * minmax(bm25) over the union of both lists; "
                        "rrf: reciprocal-rank fusion (k=60) weighted 2A / 2(1 - A), plain RRF at A=0.5.")
    g.add_argument("--hybrid_depth", type=positive_int, default=None,
                   help="Passages taken from each side before fusing (default 100).")
    args = p.parse_args(argv)
    _check_hybrid_args(p, args)
    if args.hnsw_index:
        args.index_type = "hnsw"
    if args.encode_q_and_save and not args.q_encoding_path:
        p.error("--encode_q_and_save needs --q_encoding_path")
    if not args.encode_q_and_save:
        if not args.encoded_ctx_file:
            p.error("--encoded_ctx_file is required (unless --encode_q_and_save)")
        if args.mine_hard_negatives:
            if not args.ctx_file:
                p.error("--mine_hard_negatives needs --ctx_file (the negatives carry their texts)")
        elif not args.out_file:
            p.error("--out_file is required (unless --encode_q_and_save or --mine_hard_negatives)")
    if args.skip_top < 0:
        p.error("--skip_top must be >= 0")
    return args


def _check_hybrid_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.hybrid_alpha is None:
        if args.fusion or args.hybrid_depth:
            p.error("--fusion and --hybrid_depth need --hybrid_alpha")
        return
    if not 0.0 <= args.hybrid_alpha <= 1.0:
        p.error(f"--hybrid_alpha must be within [0, 1], got {args.hybrid_alpha}")
    if args.encode_q_and_save or args.mine_hard_negatives:
        p.error("--hybrid_alpha fuses retrieval results: not with --encode_q_and_save or --mine_hard_negatives")
    if not args.ctx_file:
        p.error("--hybrid_alpha needs --ctx_file (BM25 searches the passage texts)")


def fusion_config(args: argparse.Namespace) -> FusionConfig:
    return FusionConfig(alpha=args.hybrid_alpha, method=args.fusion or "convex", depth=args.hybrid_depth or 100)


def hybrid_retrieve(shards: list[Shard], questions: list[tuple[str, str, list[str] | None]], vectors: np.ndarray,
                    args: argparse.Namespace) -> list[Retrieved]:
    """Dense and BM25 top-depth lists per question, fused; the first --n_docs kept, with both raw scores."""
    from dpr.data.bm25 import index_passages

    config = fusion_config(args)
    if config.depth < args.n_docs:
        logger.warning("--hybrid_depth %d < --n_docs %d: a question may get fewer than %d passages", config.depth,
                       args.n_docs, args.n_docs)
    dense_args = copy.copy(args)
    dense_args.n_docs = max(args.n_docs, config.depth)
    dense = retrieve(shards, questions, vectors, dense_args)
    t0 = time.time()
    index, pids = index_passages(args.ctx_file)
    bm25 = index.search([text for _, text, _ in questions], config.depth)
    logger.info("BM25 over %d passages of %s: %.1fs", len(pids), args.ctx_file, time.time() - t0)
    results = []
    for d, b in zip(dense, bm25):
        hits = fuse(list(zip(d.pids, d.scores)), [(pids[i], s) for i, s in b], config)[:args.n_docs]
        parts = [{"dense_score": _round(h.dense_score), "bm25_score": _round(h.bm25_score)} for h in hits]
        results.append(Retrieved(d.qid, d.question, [h.pid for h in hits], [h.score for h in hits], parts))
    logger.info("fused (%s, alpha %.2f, depth %d)", config.method, config.alpha, config.depth)
    return results


def _round(score: float | None) -> float | None:
    return None if score is None else round(score, 6)


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


def question_vectors(args: argparse.Namespace, qids: list[str], texts: list[str]) -> np.ndarray:
    """Load them from --q_encoding_path, or encode with the question tower (and save with --encode_q_and_save)."""
    cached = args.q_encoding_path and Path(args.q_encoding_path).is_file()
    if cached and not args.re_encode_q:
        logger.info("question vectors from %s", args.q_encoding_path)
        return load_question_vectors(args.q_encoding_path, qids)
    q_encoder, _, tokenizer = load_encoder_pair(args.model_file or args.pretrained_model_cfg)
    if args.pooling:
        q_encoder.settings.pooling = args.pooling
    if args.do_lower_case:
        q_encoder.settings.lowercase = True
    device = default_device()
    q_encoder.to(device)
    t0 = time.time()
    vectors = encode_texts(q_encoder, tokenizer, texts, "query", args.q_sequence_length, args.batch_size, device,
                           resolve_amp_dtype(device, args.fp16, args.bf16), progress=True)
    logger.info("encoded %d questions in %.1fs", len(texts), time.time() - t0)
    if args.encode_q_and_save:
        save_question_vectors(args.q_encoding_path, qids, vectors)
        logger.info("saved question vectors to %s", args.q_encoding_path)
    return vectors


def index_spec(args: argparse.Namespace) -> IndexSpec:
    use_gpu = gpu_available() and not args.faiss_cpu
    return IndexSpec(index_type=args.index_type, factory=args.index_factory, hnsw_m=args.hnsw_m,
                     ef_construction=args.ef_construction, ef_search=args.ef_search, nlist=args.nlist,
                     pq_m=args.pq_m, nprobe=args.nprobe, use_gpu=use_gpu, gpu_fp16=args.faiss_fp16)


def retrieve(shards: list[Shard], questions: list[tuple[str, str, list[str] | None]], vectors: np.ndarray,
             args: argparse.Namespace) -> list[Retrieved]:
    dim = shards[0].dim
    if vectors.shape[1] != dim:
        raise InputError(shards[0].path, f"embeddings have dimension {dim} but the question encoder "
                                         f"({args.model_file or args.pretrained_model_cfg}) gives {vectors.shape[1]}")
    all_ids = [pid for shard in shards for pid in shard.ids]
    t0 = time.time()
    scores, rows = search_shards(shards, vectors, args.n_docs, index_spec(args), args.search_shard_size)
    logger.info("searched %d questions over %d passages in %.1fs", len(vectors), len(all_ids), time.time() - t0)
    results = []
    for (qid, text, _), s, r in zip(questions, scores, rows):
        keep = r >= 0
        results.append(Retrieved(qid, text, [all_ids[i] for i in r[keep]], s[keep].tolist()))
    return results


def report_metrics(questions, results: list[Retrieved], path: Path) -> dict | None:
    """Official metrics over the labelled questions (printed and saved), or None when none has labels."""
    from dpr.eval.dureader import evaluate

    reference = {qid: set(gold) for qid, _, gold in questions if gold}
    if not reference:
        logger.info("the questions carry no labels: no metrics")
        return None
    metrics = evaluate(reference, {r.qid: r.pids for r in results if r.qid in reference})
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
    return {p.parent for p in output_paths(args)}


def run(args: argparse.Namespace) -> None:
    for d in output_dirs(args):  # before encoding and searching, not after
        check_writable_dir(d)
    questions, entries = load_questions(args)
    qids = [q for q, _, _ in questions]
    vectors = question_vectors(args, qids, [t for _, t, _ in questions])
    if args.encode_q_and_save:
        return
    shards = open_shards(args.encoded_ctx_file)
    if args.hybrid_alpha is not None:
        results = hybrid_retrieve(shards, questions, vectors, args)
    else:
        results = retrieve(shards, questions, vectors, args)
    if args.mine_hard_negatives:
        passages = lookup_passages(args.ctx_file, {pid for r in results for pid in r.pids})
        _check_found(args.ctx_file, passages, results)
        mined, empty = with_mined_negatives(entries, [r.pids for r in results], passages, args.skip_top,
                                            args.num_hard_negatives)
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
    report_metrics(questions, results, metrics)


def _check_found(ctx_file: str, passages: dict, results: list[Retrieved]) -> None:
    missing = {pid for r in results for pid in r.pids} - passages.keys()
    if missing:
        raise InputError(ctx_file, f"{len(missing)} retrieved passage ids are not in this file (e.g. "
                                   f"{sorted(missing)[0]!r}): embeddings from another collection?")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    try:
        run(args)
    except (InputError, IndexBuildError) as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
