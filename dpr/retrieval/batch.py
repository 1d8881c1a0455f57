"""Batch retrieval, the library path behind dense_retriever.py: `run_batch(config)` reads the questions, gets their
vectors (encoded, or saved ones with --q_encoding_path), checks that the passage vectors pair with them, searches
(one index, windows of --search_shard_size, or fused with BM25), reranks the top --reranker_depth with --reranker,
and writes the submission, rerank file, TREC run and metrics, or the training file with mined negatives (denoised
with --reranker). `open_retriever(config)` is the one-question path: the
Retriever API with the same settings. Each check lives in the module named beside its call."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from dpr.data.cleaning import clean_text
from dpr.data.collection_meta import sibling_ids_enabled
from dpr.data.formats import read_dpr_json, read_questions
from dpr.encode import encode_texts
from dpr.index.embeddings import Shard, expand_shards, open_shards
from dpr.index.search import SavedIndexPolicy
from dpr.models.loading import load_towers
from dpr.retrieval.config import RetrievalConfig
from dpr.retrieval.dense import (
    BM25Side,
    Ranking,
    check_model_pairs,
    check_source,
    hybrid_search,
    model_side,
    search_dense,
)
from dpr.retrieval.mining import with_denoised_negatives, with_mined_negatives
from dpr.retrieval.passages import check_in_collection, lookup_passages
from dpr.retrieval.query_cache import check_saved_pairs, load_question_vectors, question_record, save_question_vectors
from dpr.retrieval.rerank_config import DEFAULT_RERANK_DEPTH
from dpr.retrieval.reranker import Reranker, rerank_many
from dpr.retrieval.results import Retrieved, write_rerank_file, write_submission, write_trec_file
from dpr.retrieval.retriever import Retriever
from dpr.utils.io import InputError, check_writable_dir, write_json
from dpr.utils.precision import default_device, resolve_amp_dtype

logger = logging.getLogger("dense_retriever")

Question = tuple[str, str, "list[str] | None"]  # (qid, question, gold pids or None)


def run_batch(config: RetrievalConfig) -> list[Retrieved] | None:
    """The whole batch run of `config` (see the module docstring); the results, or None with --encode_q_and_save."""
    if config.num_threads:
        import torch

        torch.set_num_threads(config.num_threads)
    for d in config.output_dirs():  # before encoding and searching, not after
        check_writable_dir(d)
    reranker = open_reranker(config) if config.reranker else None  # a bad directory stops the run before the work
    questions, entries = load_questions(config)
    paths = [] if config.encode_q_and_save else expand_shards(config.embeddings)
    if paths and not config.saved_questions:
        check_passage_vectors(config, paths)  # before the model is loaded
    vectors = question_vectors(config, [q for q, _, _ in questions], [t for _, t, _ in questions])
    if config.encode_q_and_save:
        return None
    if config.saved_questions:
        check_passage_vectors(config, paths)
    results = search(config, open_shards(config.embeddings), questions, vectors)
    if config.mine_hard_negatives:
        write_mined(config, entries, results, reranker)
        return results
    passages = passages_of(config.ctx_file, results) if config.ctx_file else None
    if reranker is not None:
        results = rerank(config, reranker, results, passages)
    write_results(config, questions, results, passages)
    return results


def load_questions(config: RetrievalConfig) -> tuple[list[Question], list[dict] | None]:
    """(qid, question, gold pids or None) triples; with mining also the DPR training entries themselves."""
    if config.mine_hard_negatives:
        entries = read_dpr_json(config.qa_file)
        questions = [(str(e.get("question_id", i)), clean_text(str(e["question"])), None) for i, e in enumerate(entries)]
    else:
        entries, questions = None, [(str(q), t, g) for q, t, g in read_questions(config.qa_file)]
    if not questions:
        raise InputError(config.qa_file, "no questions found")
    return questions, entries


def asked_question_settings(config: RetrievalConfig) -> dict:
    """The question-side settings this run's flags ask for (None: not asked), to hold saved vectors against."""
    return {"max_length": config.q_sequence_length, "pooling": config.pooling, "query_prefix": config.query_prefix,
            "lowercase": True if config.do_lower_case else None}


def check_passage_vectors(config: RetrievalConfig, paths: list[Path]) -> None:
    """Stop unless the passage vectors pair with the question side (the saved question vectors, or the model and
    this run's flags), tile one collection and were encoded from --ctx_file, unless --allow_mismatched_vectors /
    --allow_partial_index."""
    if config.saved_questions:
        check_saved_pairs(config.q_encoding_path, paths, asked_question_settings(config), config.passage_prefix,
                          config.allow_mismatched_vectors, config.allow_partial_index)
    else:
        check_model_pairs(paths, config.model_name, config.allow_mismatched_vectors, config.tower_options(),
                          config.allow_partial_index)
    if config.ctx_file:
        check_source(paths, config.ctx_file, config.allow_mismatched_vectors)


def question_vectors(config: RetrievalConfig, qids: list[str], texts: list[str]) -> np.ndarray:
    """Load them from --q_encoding_path, or encode with the question tower (and save with --encode_q_and_save)."""
    if config.saved_questions:
        logger.info("question vectors from %s", config.q_encoding_path)
        return load_question_vectors(config.q_encoding_path, qids, texts)
    towers = load_towers(config.tower_options(), need="question")
    q_encoder, tokenizer = towers.question, towers.tokenizer
    device = default_device()
    q_encoder.to(device)
    t0 = time.time()
    vectors = encode_texts(q_encoder, tokenizer, texts, "query", config.q_sequence_length, config.batch_size, device,
                           resolve_amp_dtype(device, config.precision), progress=True)
    logger.info("encoded %d questions in %.1fs", len(texts), time.time() - t0)
    if config.encode_q_and_save:
        record = question_record(model_side(config.model_name), q_encoder.settings, config.q_sequence_length, qids,
                                 texts, config.qa_file)
        save_question_vectors(config.q_encoding_path, qids, vectors, record)
        logger.info("saved question vectors to %s", config.q_encoding_path)
    return vectors


def search(config: RetrievalConfig, shards: list[Shard], questions: list[Question],
           vectors: np.ndarray) -> list[Retrieved]:
    """Top --n_docs (or --reranker_depth, when deeper) per question: dense (one index, or windows), or fused with
    BM25 over --ctx_file."""

    def dense(k: int) -> list[Ranking]:
        return search_dense(shards, vectors, k, config.index_spec(), config.search_shard_size,
                            SavedIndexPolicy(rebuild=config.rebuild_index), config.model_name)

    fusion = config.fusion_config
    if fusion is None:
        ranked = dense(config.first_stage_depth)
    else:
        ranked = hybrid_search(dense, BM25Side(config.ctx_file), [t for _, t, _ in questions],
                               config.first_stage_depth, fusion,
                               ("--hybrid_depth", "--n_docs"))
    return [Retrieved(qid, text, r.pids, r.scores, r.parts) for (qid, text, _), r in zip(questions, ranked)]


def open_reranker(config: RetrievalConfig) -> Reranker:
    """--reranker on this device, with --reranker_batch_size and --precision (its own pair settings)."""
    reranker = Reranker.load(config.reranker, batch_size=config.reranker_batch_size, precision=config.precision)
    s = reranker.settings
    logger.info("reranker %s: pairs of at most %d tokens (question %d), lowercase %s, batch %d on %s", config.reranker,
                s.max_length, s.q_max_length, s.do_lower_case, reranker.batch_size, reranker.device)
    return reranker


def rerank(config: RetrievalConfig, reranker: Reranker, results: list[Retrieved],
           passages: dict[str, tuple[str, str]]) -> list[Retrieved]:
    """--reranker: each question's top --reranker_depth reordered by the reranker, the rest after them, --n_docs
    kept (dpr.retrieval.reranker.rerank_lists)."""
    reranked = rerank_many(reranker, [r.question for r in results], results, passages,
                           config.rerank_depth, config.n_docs, progress=True)
    return [Retrieved(r.qid, r.question, *lists) for r, lists in zip(results, reranked)]


def passages_of(ctx_file: str, results: list[Retrieved]) -> dict[str, tuple[str, str]]:
    """The texts of every retrieved passage; an id ctx_file lacks stops the run (another collection)."""
    wanted = {pid for r in results for pid in r.pids}
    passages = lookup_passages(ctx_file, wanted)
    check_in_collection(ctx_file, wanted - passages.keys())
    return passages


def write_mined(config: RetrievalConfig, entries: list[dict], results: list[Retrieved],
                reranker: Reranker | None = None) -> None:
    """--mine_hard_negatives: the training file with the retrieved non-positives as hard negatives."""
    passages = passages_of(config.ctx_file, results)
    sibling_ids, why = sibling_ids_enabled(config.sibling_ids, config.ctx_file)
    logger.info("paragraph-sibling rule %s (%s)", "on" if sibling_ids else "off", why)
    threshold = config.denoise if reranker is not None else None
    mined, empty = with_mined_negatives(entries, [r.pids for r in results], passages, config.skip_top,
                                        None if threshold is not None else config.num_hard_negatives,
                                        sibling_ids=sibling_ids)
    if threshold is not None:
        mined, empty = denoised(reranker, mined, threshold, config.num_hard_negatives)
    write_json(config.mine_hard_negatives, mined, indent=None)
    logger.info("wrote %d training questions with mined hard negatives to %s (%d got none)", len(mined),
                config.mine_hard_negatives, empty)


def denoised(reranker: Reranker, entries: list[dict], threshold: float,
             max_negatives: int | None) -> tuple[list[dict], int]:
    """Training entries with the negatives the reranker finds likely relevant dropped (dpr.retrieval.mining), the
    counts logged; also how many entries are left with no negative."""
    t0 = time.time()
    out, stats = with_denoised_negatives(entries, lambda q, p: reranker.score_pairs(q, p, progress=True), threshold,
                                         max_negatives)
    logger.info("denoised with %s at threshold %.3g: dropped %d hard negatives of %d questions (%d pairs scored in "
                "%.1fs; %d questions without a positive kept theirs)", reranker.path, threshold, stats["dropped"],
                stats["questions_with_drops"], stats["scored_pairs"], time.time() - t0, stats["no_positive"])
    return out, sum(not e["hard_negative_ctxs"] for e in out)


def write_results(config: RetrievalConfig, questions: list[Question], results: list[Retrieved],
                  passages: dict[str, tuple[str, str]] | None = None) -> None:
    """The submission, the rerank file, the TREC run (--trec_file) and the metrics (labelled questions)."""
    submission, rerank_path, metrics = config.output_paths()
    if passages is None and config.ctx_file:
        passages = passages_of(config.ctx_file, results)
    write_submission(submission, results)
    write_rerank_file(rerank_path, results, passages)
    logger.info("wrote %s and %s", submission, rerank_path)
    if config.trec_file:
        write_trec_file(config.trec_file, results, config.trec_tag)
        logger.info("wrote the TREC run file %s", config.trec_file)
    report_metrics(questions, results, metrics, config.n_docs)


def report_metrics(questions: list[Question], results: list[Retrieved], path: Path, n_docs: int) -> dict | None:
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


def open_retriever(config: RetrievalConfig) -> Retriever:
    """The Retriever API over --index_dir / --encoded_ctx_file (and --ctx_file for texts and BM25) with the flags'
    model and index options: the index is built or loaded once, only the question tower is loaded."""
    return Retriever.load(config.model_name, config.embeddings, config.ctx_file, precision=config.precision,
                          pooling=config.pooling, lowercase=config.do_lower_case, query_prefix=config.query_prefix,
                          passage_prefix=config.passage_prefix, query_max_length=config.q_sequence_length,
                          batch_size=config.batch_size, index_spec=config.index_spec(),
                          rebuild_index=config.rebuild_index, allow_mismatched_vectors=config.allow_mismatched_vectors,
                          allow_partial_index=config.allow_partial_index, num_threads=config.num_threads or 1,
                          reranker=config.reranker, reranker_depth=config.reranker_depth or DEFAULT_RERANK_DEPTH,
                          reranker_batch_size=config.reranker_batch_size)
