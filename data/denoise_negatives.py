"""Denoise a DPR training file's existing hard negatives with a reranker (RocketQA's denoised hard negatives): drop
each hard_negative_ctxs entry the cross-encoder finds likely relevant, keep the others in their order.

Usage: python data/denoise_negatives.py --in_file dual_train.json --out_file dual_train.denoised.json \
           --reranker DIR [--denoise_threshold 0.5] [--num_hard_negatives N]

The rule is dense_retriever.py --mine_hard_negatives --reranker's (dpr/retrieval/mining.py): a negative is dropped
when sigmoid(its reranker score - the best positive's score) > T, i.e. when the reranker would pick it over the
labelled positive with probability above T. Each question gains `dropped_hard_negatives`; the counts are logged.
For step 1's BM25 negatives (preprocess_dureader.py) or any file of the same format. Bad input: one
`error: FILE[:LINE]: what` line on stderr, exit status 2, nothing written.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.options import add_precision_args, positive_int, setup_logging  # noqa: E402
from dpr.retrieval.rerank_config import DenoiseFlags  # noqa: E402
from dpr.utils.cli import run_script  # noqa: E402
from dpr.utils.flags import ConfigParser, add_flags, flag  # noqa: E402

logger = logging.getLogger("denoise_negatives")
IO = "inputs and outputs"


@dataclass(frozen=True)
class DenoiseConfig(DenoiseFlags):
    """data/denoise_negatives.py's settings: the reranker's and the threshold's flags, then its own."""

    in_file: str | None = flag(None, group=IO, help="A DPR training file (JSON list with hard_negative_ctxs).")
    out_file: str | None = flag(None, group=IO, help="The denoised copy (written atomically).")
    num_hard_negatives: int | None = flag(None, group=IO, type=positive_int, help=(
        "Negatives kept per question after denoising (default: every one kept)."))
    precision: str = "auto"

    def __post_init__(self) -> None:
        missing = [f"--{f}" for f in ("in_file", "out_file", "reranker") if not getattr(self, f)]
        if missing:
            raise ValueError(f"{', '.join(missing)} required")
        problem = self.threshold_problem()
        if problem:
            raise ValueError(problem)


def parse_args(argv: list[str] | None = None) -> DenoiseConfig:
    parser = ConfigParser(DenoiseConfig, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, DenoiseConfig)
    add_precision_args(parser)
    return parser.parse_args(argv)


def run(config: DenoiseConfig) -> dict:
    """Denoise --in_file into --out_file; the counts."""
    from dpr.data.formats import iter_dpr_json
    from dpr.retrieval.batch import denoised, open_reranker
    from dpr.retrieval.mining import DEFAULT_DENOISE_THRESHOLD
    from dpr.utils.io import InputError, check_writable_dir, write_json

    check_writable_dir(Path(config.out_file).parent)
    entries = []
    for n, line, entry in iter_dpr_json(config.in_file):
        for key in ("positive_ctxs", "hard_negative_ctxs"):
            ctxs = entry.get(key) or []
            if not isinstance(ctxs, list) or not all(isinstance(c, dict) and isinstance(c.get("text"), str)
                                                     for c in ctxs):
                raise InputError(config.in_file, f"entry {n}: {key} must be a list of objects with a 'text' string",
                                 line=line)
        entries.append(entry)
    if not entries:
        raise InputError(config.in_file, "no training questions")
    threshold = DEFAULT_DENOISE_THRESHOLD if config.denoise_threshold is None else config.denoise_threshold
    before = sum(len(e.get("hard_negative_ctxs") or []) for e in entries)
    out, empty = denoised(open_reranker(config), entries, threshold, config.num_hard_negatives)
    write_json(config.out_file, out, indent=None)
    after = sum(len(e["hard_negative_ctxs"]) for e in out)
    logger.info("wrote %d questions to %s: %d of %d hard negatives kept (%d questions left with none)", len(out),
                config.out_file, after, before, empty)
    return {"questions": len(out), "before": before, "after": after, "empty": empty}


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    setup_logging()
    return run_script(lambda: run(config))


if __name__ == "__main__":
    sys.exit(main())
