"""BM25 baseline (jieba + bm25s): top-n passages per question, written in the official {qid: [pids]} format.

Usage: python data/bm25_retriever.py --qa_file dev.json --ctx_file passages.tsv --out_file bm25_dev.json [--n_docs 50]
QUESTIONS may be release JSON lines, a DPR JSON list or a `qid\\tquestion` TSV. Passage tokens are cached in
`passages.jieba/` beside passages.tsv (shared with preprocessing). When the questions carry gold passage ids the
official metric is printed as well.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.data.bm25 import index_passages  # noqa: E402
from dpr.data.formats import read_questions  # noqa: E402
from dpr.eval.dureader import evaluate  # noqa: E402
from dpr.options import positive_int, setup_logging  # noqa: E402
from dpr.utils.cli import fail, run_script  # noqa: E402
from dpr.utils.io import InputError, check_writable_dir, write_json  # noqa: E402

logger = logging.getLogger("bm25_retriever")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qa_file", required=True, help="Questions: release JSON lines, DPR JSON or qid<TAB>question.")
    parser.add_argument("--ctx_file", required=True, help="passages.tsv (id, text, title).")
    parser.add_argument("--out_file", required=True, help="Ranked output, official format {qid: [pid, ...]}.")
    parser.add_argument("--n_docs", type=positive_int, default=50, help="Passages per question.")
    parser.add_argument("--num_workers", type=positive_int, default=1,
                   help="Processes for jieba tokenization, the BM25 index and search.")
    parser.add_argument("--no_cache", action="store_true", help="Neither read nor write the token cache.")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        check_writable_dir(Path(args.out_file).parent)
        questions = read_questions(args.qa_file)
        t0 = time.time()
        index, pids = index_passages(args.ctx_file, None if args.no_cache else "default", args.num_workers)
        t1 = time.time()
        hits = index.search([q for _, q, _ in questions], args.n_docs, args.num_workers)
        t2 = time.time()
    except InputError as e:
        fail(str(e))
    ranked = {qid: [pids[d] for d, _ in h] for (qid, _, _), h in zip(questions, hits)}
    write_json(args.out_file, ranked, indent=None)
    logger.info("%d passages indexed in %.1fs; %d questions searched in %.1fs; wrote %s",
                len(pids), t1 - t0, len(questions), t2 - t1, args.out_file)
    result: dict = {"index_s": round(t1 - t0, 2), "search_s": round(t2 - t1, 2)}
    reference = {qid: set(gold) for qid, _, gold in questions if gold is not None}
    if reference:
        result.update(evaluate(reference, ranked))
        print(json.dumps({k: result[k] for k in ("MRR@10", "QueriesRanked", "recall@1", "recall@50")}))
    return result


if __name__ == "__main__":
    sys.exit(run_script(main))
