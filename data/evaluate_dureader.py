"""DuReader-retrieval's official metric: REF (dev.json lines) x PRED ({qid: [pids]}) -> MRR@10, recall@1, recall@50.

Usage: python data/evaluate_dureader.py REF PRED [--strict]
Prints one JSON line with the official keys (MRR@10, QueriesRanked, recall@1, recall@50).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.eval.dureader import evaluate, load_predictions, load_reference  # noqa: E402
from dpr.options import setup_logging  # noqa: E402
from dpr.utils.cli import fail, run_script  # noqa: E402
from dpr.utils.io import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", help="dev.json-style JSON lines with question_id and answer_paragraphs")
    parser.add_argument("prediction", help="JSON {question_id: [paragraph_id, ...]} in rank order (first 50 used)")
    parser.add_argument("--strict", action="store_true", help="A pid ranked twice for one query is an error.")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        metrics = evaluate(load_reference(args.reference), load_predictions(args.prediction), strict=args.strict)
    except InputError as e:
        fail(str(e))
    except ValueError as e:  # the metric's own checks concern the two files together: name them
        fail(f"{args.prediction} (scored against {args.reference}): {e}")
    print(json.dumps(metrics, sort_keys=True))
    return metrics


if __name__ == "__main__":
    sys.exit(run_script(main))
