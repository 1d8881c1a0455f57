"""Step 3: encode passages.tsv (or shard k of n of it) with the passage encoder.

Writes `{out_file}_shard{k}.npy` (float32, or float16 with --save_fp16; [N, dim]), `{out_file}_shard{k}.ids.txt`
(one passage id a line, same row order as the file) and `{out_file}_shard{k}.meta.json`, the record of what made
them: the model's towers and tokenizer (content hashes), pooling, normalisation, prefix, lowercasing, passage length,
source file (size and a hash of the whole file, taken while it is counted) and rows (shard k of n: [start, stop) of
the file's total), dtype. Each file is written under a temporary name and renamed when complete. Re-running skips a
shard only when its files are complete and its record equals the one this run would write (checked before the model
is loaded); any difference re-encodes it, and the log says why. A record written by an older version stops the run
with one line (re-encoding 8M passages is a decision: --overwrite).
"""
from __future__ import annotations

import argparse
import sys

from dpr.options import ModelFlags, add_length_args, add_model_args, add_precision_args, setup_logging
from dpr.retrieval.passage_shards import EncodeConfig, encode_shard
from dpr.utils.cli import run_script
from dpr.utils.flags import add_flags, from_flags

model_name = EncodeConfig.model_name.fget  # what tests and callers reach through this script


def parse_args(argv: list[str] | None = None) -> EncodeConfig:
    """The flags (declared in dpr/retrieval/passage_shards.py) as a checked EncodeConfig; a bad combination is a
    usage error (exit status 2)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_precision_args(parser)
    add_length_args(parser, used=("p",))
    add_flags(parser, EncodeConfig, exclude=ModelFlags)
    try:
        return from_flags(EncodeConfig, parser.parse_args(argv))
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    config = parse_args(argv)
    if config.num_threads:
        import torch

        torch.set_num_threads(config.num_threads)
    return run_script(lambda: encode_shard(config))


if __name__ == "__main__":
    sys.exit(main())
