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
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dpr.data.formats import count_passages_tsv, passage_input, read_passages_tsv
from dpr.data.shards import shard_range
from dpr.encode import DEFAULT_BLOCK_SIZE, cast_for_inference, encode_stream, half_weights_dtype
from dpr.index.embeddings import shard_is_complete, shard_paths, write_ids
from dpr.index import records
from dpr.index.records import (differences, older, read_record, record_path, source_fingerprint, source_hasher,
                                source_record, write_record)
from dpr.models import source as model_sources
from dpr.models.encoder import Encoder, EncoderSettings
from dpr.models.fingerprint import ModelFingerprint, dirs_fingerprint
from dpr.models.loading import TowerOptions, load_towers
from dpr.training.device_defaults import ModelShape, device_defaults
from dpr.options import add_length_args, add_model_args, add_precision_args, positive_int, setup_logging
from dpr.utils.cli import report
from dpr.utils.io import InputError, atomic_path, check_writable_dir, remove_stale_temps
from dpr.utils.precision import default_device, resolve_amp_dtype

logger = logging.getLogger("generate_dense_embeddings")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_precision_args(parser)
    add_length_args(parser, used=("p",))
    g = parser.add_argument_group("encoding")
    g.add_argument("--ctx_file", required=True, help="passages.tsv (header id\\ttext\\ttitle) or one of its shards.")
    g.add_argument("--out_file", required=True,
                   help="Output prefix: writes {out_file}_shard{k}.npy and {out_file}_shard{k}.ids.txt.")
    g.add_argument("--shard_id", type=int, default=0, help="Which contiguous part of --ctx_file to encode (0-based).")
    g.add_argument("--num_shards", type=positive_int, default=1, help="Into how many parts --ctx_file is split.")
    g.add_argument("--batch_size", type=positive_int, default=None,
                   help="Passages per forward pass (halved automatically on CUDA out-of-memory). Default: for the "
                        "device: 128 on CPU; on CUDA sized from the card's memory, the model and "
                        "--p_sequence_length (dpr/training/device_defaults.py).")
    g.add_argument("--block_size", type=positive_int, default=DEFAULT_BLOCK_SIZE,
                   help="Passages read, tokenized (in background threads) and length-sorted at a time.")
    g.add_argument("--save_fp16", action="store_true",
                   help="Store vectors as float16: halves the .npy files on disk and the page cache that reading them "
                        "takes. Search converts them back: a flat CPU index holds float32 (4 bytes a value) whatever "
                        "the file; for a half-size index use --faiss_fp16 on GPU, or an IVF-PQ/HNSW index.")
    g.add_argument("--overwrite", action="store_true",
                   help="Re-encode even when the shard's files are complete and its record matches this run.")
    g.add_argument("--num_threads", type=positive_int, default=None, help="torch CPU threads (default: torch's).")
    args = parser.parse_args(argv)
    if not 0 <= args.shard_id < args.num_shards:
        parser.error(f"--shard_id must be in [0, {args.num_shards}), got {args.shard_id}")
    return args


def count_passages(ctx_file: str) -> tuple[int, dict]:
    """(passage rows, the record's `source`: size and hash of the whole file), in one read of the file."""
    digest = source_hasher()
    total = count_passages_tsv(ctx_file, digest)
    return total, source_record(Path(ctx_file).stat().st_size, digest)


def model_name(args: argparse.Namespace) -> str:
    return model_sources.model_source(args.model_file, args.pretrained_model_cfg)


def tower_options(args: argparse.Namespace) -> TowerOptions:
    return TowerOptions(model_name(args), pooling=args.pooling, lowercase=args.do_lower_case,
                        query_prefix=args.query_prefix, passage_prefix=args.passage_prefix)


def load_passage_encoder(args: argparse.Namespace) -> tuple[Encoder, object]:
    """The passage tower (only) and tokenizer, with the flags' overrides applied on top of the stored settings."""
    towers = load_towers(tower_options(args), need="passage")
    return towers.passage, towers.tokenizer


def passage_record(args: argparse.Namespace, fingerprint: ModelFingerprint, settings: EncoderSettings,
                   source: dict, start: int, stop: int, total: int) -> dict:
    """The record of what makes this shard (see records.py); `dim` is filled in once the model is loaded."""
    rows = {"shard_id": args.shard_id, "num_shards": args.num_shards, "start": start, "stop": stop, "total": total}
    info = {"model": model_name(args), "source": str(args.ctx_file)}
    return records.passage_record(fingerprint, settings, args.p_sequence_length, source, rows,
                                  "float16" if args.save_fp16 else "float32", info)


def expected_settings(args: argparse.Namespace, dirs: model_sources.ModelDirs | None = None) -> EncoderSettings | None:
    """The passage tower's settings as loading will give them: stored in its directory (else defaults), then the
    flags' overrides on top (dpr.models.source.expected_settings, which dense_retriever.py's pairing check uses too).
    Checked against the loaded tower before anything is written."""
    return model_sources.expected_settings(tower_options(args), "passage", dirs)


def shard_status(prefix: str, wanted: dict) -> str | None:
    """None when the shard's files are complete and were made as `wanted` says; else why it must be encoded."""
    npy, _ = shard_paths(prefix)
    if not npy.is_file():
        return "not encoded yet"
    found = read_record(npy)
    if older(found):
        return older(found)
    diff = [k for k in differences(found, wanted) if k != "dim"]
    if found is None:
        return f"no record of what made it ({record_path(npy).name})"
    if diff:
        return f"made by another run: its record differs in {', '.join(diff)}"
    rows = wanted["rows"]["stop"] - wanted["rows"]["start"]
    if not isinstance(found.get("dim"), int) or not shard_is_complete(prefix, rows, found["dim"]):
        return "its files are incomplete"
    return None


def encode_shard(args: argparse.Namespace) -> Path:
    """Encode this shard (unless already made exactly so); returns the .npy path."""
    prefix = f"{args.out_file}_shard{args.shard_id}"
    npy, ids_path = shard_paths(prefix)
    check_writable_dir(npy.parent)
    model = model_name(args)
    total, source = count_passages(args.ctx_file)
    start, stop = shard_range(total, args.shard_id, args.num_shards)
    if stop <= start:
        raise InputError(args.ctx_file, f"shard {args.shard_id} of {args.num_shards} is empty: the file has "
                                        f"{total} passages")
    old = older(read_record(npy)) if npy.is_file() else None
    if old and not args.overwrite:
        raise InputError(record_path(npy), f"{old}: re-encode it with --overwrite (or keep using it with that "
                                           f"version)")
    dirs = model_sources.resolve_model(model)
    fingerprint = dirs_fingerprint(dirs)
    wanted = None
    if fingerprint is not None:  # decide before loading the model
        wanted = passage_record(args, fingerprint, expected_settings(args, dirs), source, start, stop, total)
        why = shard_status(prefix, wanted)
        if why is None and not args.overwrite:
            logger.info("%s is complete and its record matches this run: skipping (use --overwrite to re-encode)",
                        npy)
            return npy
        logger.info("%s: %s: encoding", npy, "--overwrite" if why is None else why)

    encoder, tokenizer = load_passage_encoder(args)
    fingerprint = fingerprint or dirs_fingerprint(model_sources.resolve_model(model))
    if fingerprint is None:
        raise InputError(model, "the model's files are not on this disk, so the vectors cannot record it")
    record = passage_record(args, fingerprint, encoder.settings, source, start, stop, total)
    dim = record["dim"] = encoder.hidden_size
    if wanted is not None and wanted["settings"] != record["settings"]:
        logger.warning("the loaded passage tower's settings %s differ from the expected %s: recording the loaded "
                       "ones", record["settings"], wanted["settings"])
    for stale in remove_stale_temps(npy) + remove_stale_temps(ids_path) + remove_stale_temps(record_path(npy)):
        logger.info("removed %s (left by an interrupted run)", stale)
    record_path(npy).unlink(missing_ok=True)  # the old record goes first: vectors without one are never reused
    device = default_device()
    amp = resolve_amp_dtype(device, args.precision)
    cast_for_inference(encoder.to(device), half_weights_dtype(device, amp))
    batch_size = args.batch_size or device_defaults(device, ModelShape.of(encoder), args.q_sequence_length,
                                                    args.p_sequence_length, 1, 1).encode_batch
    logger.info("shard %d/%d: passages [%d, %d) of %d from %s -> %s (dim %d, %s, amp %s, batch %d%s)", args.shard_id,
                args.num_shards, start, stop, total, args.ctx_file, npy, dim, device, amp, batch_size,
                "" if args.batch_size else ", the device's default")
    ids: list[str] = []

    def texts():
        for pid, text, title in read_passages_tsv(args.ctx_file, start, stop):
            ids.append(pid)
            yield passage_input(text, title)

    t0 = time.time()
    with atomic_path(npy) as tmp, tqdm(total=stop - start, unit="passage", desc=f"shard {args.shard_id}",
                                       smoothing=0.05) as bar:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16 if args.save_fp16 else np.float32,
                                        shape=(stop - start, dim))
        row = 0
        for block in encode_stream(encoder, tokenizer, texts(), "passage", args.p_sequence_length,
                                   batch_size, device, amp, args.block_size, on_done=bar.update):
            out[row : row + len(block)] = block
            row += len(block)
        if row != stop - start or len(ids) != row:
            raise InputError(args.ctx_file, f"read {len(ids)} passages for shard {args.shard_id}, expected "
                                            f"{stop - start} (did the file change while encoding?)")
        out.flush()
        del out
        write_ids(ids_path, ids)
    if source_fingerprint(args.ctx_file) != source:
        raise InputError(args.ctx_file, "the file changed while it was being encoded; run again")
    write_record(npy, record)  # last: a shard is reused only once all three files are in place
    elapsed = time.time() - t0
    logger.info("wrote %s + %s + %s: %d passages in %.1fs (%.1f passages/s)", npy, ids_path.name,
                record_path(npy).name, row, elapsed, row / max(elapsed, 1e-9))
    return npy


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        encode_shard(args)
    except InputError as e:
        return report(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
