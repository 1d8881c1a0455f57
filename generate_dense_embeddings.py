"""Step 3: encode passages.tsv (or shard k of n of it) with the passage encoder.

Writes `{out_file}_shard{k}.npy` (float32, or float16 with --save_fp16; [N, dim]) and `{out_file}_shard{k}.ids.txt`
(one passage id a line, same row order as the file). Both are written under temporary names and renamed when
complete; re-running skips a shard whose files are already complete (same passage count and dimension).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dpr.data.formats import read_passages_tsv
from dpr.encode import DEFAULT_BLOCK_SIZE, encode_stream
from dpr.index.embeddings import shard_is_complete, shard_paths, write_ids
from dpr.models.encoder import Encoder
from dpr.models.loading import TowerOptions, load_towers
from dpr.options import add_length_args, add_model_args, add_precision_args, positive_int, setup_logging
from dpr.data.formats import passage_input
from dpr.utils.io import InputError, atomic_path, check_writable_dir, remove_stale_temps
from dpr.utils.precision import default_device, resolve_amp_dtype

logger = logging.getLogger("generate_dense_embeddings")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_precision_args(p)
    add_length_args(p, used=("p",))
    g = p.add_argument_group("encoding")
    g.add_argument("--ctx_file", required=True, help="passages.tsv (header id\\ttext\\ttitle) or one of its shards.")
    g.add_argument("--out_file", required=True,
                   help="Output prefix: writes {out_file}_shard{k}.npy and {out_file}_shard{k}.ids.txt.")
    g.add_argument("--shard_id", type=int, default=0, help="Which contiguous part of --ctx_file to encode (0-based).")
    g.add_argument("--num_shards", type=positive_int, default=1, help="Into how many parts --ctx_file is split.")
    g.add_argument("--batch_size", type=positive_int, default=128,
                   help="Passages per forward pass (halved automatically on CUDA out-of-memory).")
    g.add_argument("--block_size", type=positive_int, default=DEFAULT_BLOCK_SIZE,
                   help="Passages read, tokenized (in a background thread) and length-sorted at a time.")
    g.add_argument("--save_fp16", action="store_true", help="Store vectors as float16 (half the disk and RAM).")
    g.add_argument("--overwrite", action="store_true", help="Re-encode even when the shard's files are complete.")
    g.add_argument("--num_threads", type=positive_int, default=None, help="torch CPU threads (default: torch's).")
    args = p.parse_args(argv)
    if not 0 <= args.shard_id < args.num_shards:
        p.error(f"--shard_id must be in [0, {args.num_shards}), got {args.shard_id}")
    return args


def shard_range(total: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """[start, stop) of passages for shard k of n: contiguous, sizes differ by at most one."""
    return total * shard_id // num_shards, total * (shard_id + 1) // num_shards


def count_passages(ctx_file: str) -> int:
    return sum(1 for _ in read_passages_tsv(ctx_file))


def load_passage_encoder(args: argparse.Namespace) -> tuple[Encoder, object]:
    """The passage tower (only) and tokenizer, with --pooling / --do_lower_case applied on top of the stored settings."""
    towers = load_towers(TowerOptions(args.model_file or args.pretrained_model_cfg, pooling=args.pooling,
                                      lowercase=args.do_lower_case, query_prefix=args.query_prefix,
                                      passage_prefix=args.passage_prefix), need="passage")
    return towers.passage, towers.tokenizer


def encode_shard(args: argparse.Namespace) -> Path:
    """Encode this shard (unless already complete); returns the .npy path."""
    prefix = f"{args.out_file}_shard{args.shard_id}"
    npy, ids_path = shard_paths(prefix)
    check_writable_dir(npy.parent)
    total = count_passages(args.ctx_file)
    start, stop = shard_range(total, args.shard_id, args.num_shards)
    if stop <= start:
        raise InputError(args.ctx_file, f"shard {args.shard_id} of {args.num_shards} is empty: the file has "
                                        f"{total} passages")
    encoder, tokenizer = load_passage_encoder(args)
    dim = encoder.hidden_size
    if not args.overwrite and shard_is_complete(prefix, stop - start, dim):
        logger.info("%s is complete (%d x %d): skipping (use --overwrite to re-encode)", npy, stop - start, dim)
        return npy

    for stale in remove_stale_temps(npy) + remove_stale_temps(ids_path):
        logger.info("removed %s (left by an interrupted run)", stale)
    device = default_device()
    amp = resolve_amp_dtype(device, args.precision)
    encoder.to(device)
    logger.info("shard %d/%d: passages [%d, %d) of %d from %s -> %s (dim %d, %s, amp %s)", args.shard_id,
                args.num_shards, start, stop, total, args.ctx_file, npy, dim, device, amp)
    ids: list[str] = []

    def texts():
        for pid, text, title in islice(read_passages_tsv(args.ctx_file), start, stop):
            ids.append(pid)
            yield passage_input(text, title)

    t0 = time.time()
    with atomic_path(npy) as tmp, tqdm(total=stop - start, unit="passage", desc=f"shard {args.shard_id}",
                                       smoothing=0.05) as bar:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16 if args.save_fp16 else np.float32,
                                        shape=(stop - start, dim))
        row = 0
        for block in encode_stream(encoder, tokenizer, texts(), "passage", args.p_sequence_length,
                                   args.batch_size, device, amp, args.block_size, on_done=bar.update):
            out[row : row + len(block)] = block
            row += len(block)
        if row != stop - start or len(ids) != row:
            raise InputError(args.ctx_file, f"read {len(ids)} passages for shard {args.shard_id}, expected "
                                            f"{stop - start} (did the file change while encoding?)")
        out.flush()
        del out
        write_ids(ids_path, ids)
    elapsed = time.time() - t0
    logger.info("wrote %s + %s: %d passages in %.1fs (%.1f passages/s)", npy, ids_path.name, row, elapsed,
                row / max(elapsed, 1e-9))
    return npy


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        encode_shard(args)
    except InputError as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
