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
  --reranker DIR    all of these reranked: the top --reranker_depth (default 50) of the dense or hybrid list ordered
                    by the cross-encoder's score, the rest after them in first-stage order (scoring below every
                    reranked one); the rerank file then carries each passage's first_stage_score and reranker_score
  --mine_hard_negatives OUT   a copy of the DPR training file --qa_file whose hard_negative_ctxs are the retrieved
                    non-positives after the first --skip_top ranks; with --reranker DIR, minus those the reranker
                    finds likely relevant (--denoise_threshold; filtered, never reordered)

One question from the shell (no --qa_file): --query "..." prints the top --n_docs passages (rank, score, id, text on
one line; texts need --ctx_file); with no --query and stdin a terminal, a prompt asks one question per line (an
empty line or EOF ends). --index_dir D stands for --encoded_ctx_file "D/emb_shard*.npy" (what run_gen_emb.sh writes).
Bad input: one `error: FILE[:LINE]: what` line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from dpr.index.faiss_index import IndexBuildError
from dpr.options import ModelFlags, add_length_args, add_model_args, add_precision_args, setup_logging
from dpr.retrieval.batch import open_retriever, run_batch
from dpr.retrieval.config import GROUPS, RetrievalConfig
from dpr.retrieval.retriever import Hit, answer_lines
from dpr.utils.cli import run_script
from dpr.utils.flags import add_flags, from_flags

# what tests and callers reach through this script: the config's own rules
index_spec = RetrievalConfig.index_spec
output_paths = RetrievalConfig.output_paths
model_name = RetrievalConfig.model_name.fget


def parse_args(argv: list[str] | None = None) -> RetrievalConfig:
    """The flags (declared in dpr/retrieval/config.py) as a checked RetrievalConfig; a bad combination is a usage
    error (exit status 2)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_precision_args(parser)
    add_length_args(parser, used=("q",))
    add_flags(parser, RetrievalConfig, {name: parser.add_argument_group(name) for name in GROUPS}, exclude=ModelFlags)
    args = parser.parse_args(argv)
    prompt = args.query is None and not args.qa_file and sys.stdin.isatty()  # no questions given: ask for them
    try:
        return from_flags(RetrievalConfig, args, interactive=args.interactive or prompt)
    except ValueError as e:
        parser.error(str(e))


def format_hits(hits: list[Hit], width: int = 100) -> str:
    """One line per passage: rank, score, id, the text (title first) cut to one line of about `width` characters."""
    lines = []
    for rank, h in enumerate(hits, 1):
        text = " ".join(" ".join(t for t in (h.title, h.text) if t).split())
        if len(text) > width:
            text = text[: width - 1] + "…"
        lines.append(f"{rank:>3}  {h.score:8.4f}  {h.pid}  {text}".rstrip())
    return "\n".join(lines) if lines else "(no passages)"


def run_queries(config: RetrievalConfig, stdin=None, out=None) -> None:
    """--query: answer it; else the prompt: one question per line from stdin until an empty line or EOF."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    retriever = open_retriever(config)
    fusion = {"fusion": config.fusion, "hybrid_depth": config.hybrid_depth}
    if config.query is not None:
        hits = retriever.search(config.query, config.n_docs, config.hybrid_alpha, **fusion)
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
    for _, hits in answer_lines(retriever, lines(), config.n_docs, config.hybrid_alpha, **fusion):
        print(format_hits(hits), file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0, or 2 after one `error: FILE[:LINE]: what` line on stderr for bad input."""
    config = parse_args(argv)
    setup_logging(logging.WARNING if config.query_mode else logging.INFO)
    return run_script(lambda: run_queries(config) if config.query_mode else run_batch(config), IndexBuildError)


if __name__ == "__main__":
    sys.exit(main())
