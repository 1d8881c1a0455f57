"""Rerank an existing submission with a cross-encoder: e.g. BM25 + reranker, no dense vectors needed.

Usage: python data/rerank.py --in_file bm25_dev.json --qa_file dev.json --ctx_file passages.tsv --reranker DIR \
           --out_file bm25_rr_dev.json [--reranker_depth 50] [--n_docs 50] [--trec_file run.trec]

--in_file is a submission {question_id: [passage ids, best first]} (bm25_retriever.py's, dense_retriever.py's, any
system's); its first --reranker_depth passages per question are ordered by the reranker's score and the rest follow
in their order, scoring below every reranked one (dpr/retrieval/reranker.py, the rule dense_retriever.py --reranker
uses). Written as dense_retriever.py writes them: the submission, a rerank file (*.rerank.jsonl; each passage's
reranker_score, null below the depth), the official metrics when the questions carry labels (*.metrics.json) and
optionally a TREC run. The first-stage scores are not in a submission: the rerank file's first_stage_score is null.
Bad input: one `error: FILE[:LINE]: what` line on stderr, exit status 2, nothing written.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.options import add_precision_args, positive_int, setup_logging  # noqa: E402
from dpr.retrieval.rerank_config import RerankFlags  # noqa: E402
from dpr.utils.cli import run_script  # noqa: E402
from dpr.utils.flags import ConfigParser, add_flags, flag  # noqa: E402

logger = logging.getLogger("rerank")
IO = "inputs and outputs"


@dataclass(frozen=True)
class RerankConfig(RerankFlags):
    """data/rerank.py's settings: the reranker's flags (shared with dense_retriever.py), then its own."""

    in_file: str | None = flag(None, group=IO, metavar="SUBMISSION", help=(
        "The run to rerank: {question_id: [passage ids, best first]}."))
    qa_file: str | None = flag(None, group=IO, help=(
        "The questions (release JSON lines, DPR JSON, or qid\\tquestion TSV): their texts, and labels for metrics."))
    ctx_file: str | None = flag(None, group=IO, help="passages.tsv (id, text, title): the texts the reranker reads.")
    out_file: str | None = flag(None, group=IO, help="The reranked submission (a directory: top{n_docs}_res.json).")
    rerank_file: str | None = flag(None, group=IO, help="Default: the submission path with .rerank.jsonl.")
    metrics_file: str | None = flag(None, group=IO, help="Default: the submission path with .metrics.json.")
    trec_file: str | None = flag(None, group=IO, help="Also write a TREC run file (qid Q0 pid rank score tag).")
    trec_tag: str = flag("dureader-dpr-rerank", group=IO, help="The run tag (last column) of --trec_file.")
    n_docs: int = flag(50, group=IO, type=positive_int, help="Passages kept per question.")
    precision: str = "auto"

    def __post_init__(self) -> None:
        missing = [f"--{f}" for f in ("in_file", "qa_file", "ctx_file", "out_file", "reranker") if not getattr(self, f)]
        if missing:
            raise ValueError(f"{', '.join(missing)} required")


def parse_args(argv: list[str] | None = None) -> RerankConfig:
    import argparse

    parser = ConfigParser(RerankConfig, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, RerankConfig)
    add_precision_args(parser)
    return parser.parse_args(argv)


def run(config: RerankConfig) -> dict | None:
    """Rerank --in_file and write the outputs; the metrics (None without labels)."""
    from dpr.data.formats import read_questions
    from dpr.eval.dureader import load_predictions
    from dpr.retrieval.batch import open_reranker, passages_of, report_metrics
    from dpr.retrieval.config import RetrievalConfig
    from dpr.retrieval.rerank_config import DEFAULT_RERANK_DEPTH
    from dpr.retrieval.reranker import rerank_many
    from dpr.retrieval.results import Retrieved, write_rerank_file, write_submission, write_trec_file
    from dpr.utils.io import InputError, check_writable_dir

    submission_path, rerank_path, metrics_path = RetrievalConfig.output_paths(config)
    for d in {submission_path.parent, rerank_path.parent, metrics_path.parent}:
        check_writable_dir(d)
    run_in = load_predictions(config.in_file)
    questions = {qid: (text, gold) for qid, text, gold in read_questions(config.qa_file)}
    unknown = next((qid for qid in run_in if qid not in questions), None)
    if unknown is not None:
        raise InputError(config.in_file, f"question {unknown!r} is not in {config.qa_file}: its text is unknown")
    if not run_in:
        raise InputError(config.in_file, "no questions in this run")
    first = [Retrieved(qid, questions[qid][0], [str(p) for p in pids], [None] * len(pids))
             for qid, pids in run_in.items()]
    passages = passages_of(config.ctx_file, first)
    depth = config.reranker_depth or DEFAULT_RERANK_DEPTH
    reranked = rerank_many(open_reranker(config), [r.question for r in first], first, passages, depth, config.n_docs,
                           progress=True)
    results = [Retrieved(r.qid, r.question, *lists) for r, lists in zip(first, reranked)]
    write_submission(submission_path, results)
    write_rerank_file(rerank_path, results, passages)
    if config.trec_file:
        write_trec_file(config.trec_file, results, config.trec_tag)
    logger.info("reranked %d questions of %s (depth %d): wrote %s and %s", len(results), config.in_file, depth,
                submission_path, rerank_path)
    labelled = [(qid, text, gold) for qid, (text, gold) in questions.items() if qid in run_in]
    return report_metrics(labelled, results, metrics_path, config.n_docs)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    setup_logging()
    return run_script(lambda: run(config))


if __name__ == "__main__":
    sys.exit(main())
