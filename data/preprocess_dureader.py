"""Preprocess DuReader-retrieval (or the CMRC2018 mini corpus built in its release layout) into DPR files.

Reads the release JSON layout (train.json, dev.json, [test.json], passage_collection.json) or the baseline layout
(dureader-retrieval-baseline-dataset/: train/dual.train.tsv, dev/dev.json, passage-collection/part-0*,
passage2id.map.json), autodetected. Writes OUTPUT_DIR/retrieval_train_data/dual_train.json, dual_dev.json
(+ dual_test.json for a labelled test.json, + dev_with_hn.json with --dev_topk), OUTPUT_DIR/passages.tsv with
passages_shard{k}_of{N}.tsv beside it, OUTPUT_DIR/collection_meta.json when the ids follow `<paragraph>-<k>` (see
--sibling_ids), and OUTPUT_DIR/preprocess_stats.json (counts, dropped lines, timings).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpr.data.bm25 import default_workers  # noqa: E402
from dpr.data.preprocess import Options, run  # noqa: E402
from dpr.options import NO_EFFECT, positive_int, setup_logging  # noqa: E402
from dpr.utils.cli import fail, run_script  # noqa: E402
from dpr.utils.io import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dir", type=Path, default=ROOT / "data" / "dureader_data",
                   help="The release files, or the baseline dataset (also found in its "
                        "dureader-retrieval-baseline-dataset/ subfolder). Default: data/dureader_data")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "data" / "dureader_data",
                   help="Where retrieval_train_data/, passages.tsv and the shards go. Default: data/dureader_data")
    parser.add_argument("--layout", choices=["auto", "release", "baseline"], default="auto")
    parser.add_argument("--num_hard_negatives", type=positive_int, default=30,
                   help="Size of each question's hard-negative pool (the baseline file's own negatives when it has "
                        "them, else BM25-mined): never a positive by id or text, nor (with the sibling rule) a "
                        "passage cut from the same paragraph as one.")
    parser.add_argument("--sibling_ids", action="store_true",
                   help="Passage ids follow `<paragraph>-<k>` (passages cut from one paragraph): a positive's "
                        "siblings are never its negatives. Also on when the input has a collection_meta.json saying "
                        "id_scheme paragraph-k (the CMRC builder writes one); the record is copied beside "
                        "passages.tsv for the later steps. Off otherwise: ids like doc-0, doc-1 stay independent.")
    parser.add_argument("--num_shards", type=positive_int, default=None,
                   help=f"{NO_EFFECT} (shard files were written here once and read by no step: step 3 reads its own "
                        "rows of passages.tsv).")
    parser.add_argument("--dev_topk", type=Path, default=None,
                   help="A retriever's ranked dev output {qid: [pids]}: also write dev_with_hn.json whose hard "
                        "negatives are the first --num_hard_negatives non-gold passages.")
    parser.add_argument("--skip_bad_lines", action="store_true",
                   help="Skip and count malformed lines instead of stopping at the first (file and line named).")
    parser.add_argument("--no_bm25", action="store_true",
                   help="Do not mine BM25 negatives (questions without given negatives get none).")
    parser.add_argument("--num_workers", type=positive_int, default=None,
                   help="Processes for jieba tokenization, the BM25 index and BM25 search (default: every core "
                        "this process may use); the outputs are the same for any number.")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        report = run(Options(args.input_dir, args.output_dir, args.layout, args.num_hard_negatives,
                             args.dev_topk, args.skip_bad_lines, not args.no_bm25,
                             args.num_workers or default_workers(), args.sibling_ids))
    except InputError as e:
        fail(str(e))
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(run_script(main))
