"""Passage vectors written shard by shard, the library path behind generate_dense_embeddings.py: `EncodeConfig` (its
flags, declared here once as field metadata) and `encode_shard(config)`, which writes `{out_file}_shard{k}.npy`,
`.ids.txt` and, last, the `.meta.json` record of what made them (dpr/index/records.py), or skips a shard whose files
are complete and whose record equals the one this run would write (decided before the model is loaded)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dpr.data.formats import count_passages_tsv, passage_input, read_passages_tsv
from dpr.data.shards import shard_range
from dpr.encode import DEFAULT_BLOCK_SIZE, cast_for_inference, encode_stream, half_weights_dtype
from dpr.index import records
from dpr.index.embeddings import shard_is_complete, shard_paths, write_ids
from dpr.index.records import (
    differences,
    older,
    read_record,
    record_path,
    source_fingerprint,
    source_hasher,
    source_record,
)
from dpr.models import source as model_sources
from dpr.models.encoder import Encoder, EncoderSettings
from dpr.models.fingerprint import ModelFingerprint, dirs_fingerprint
from dpr.models.loading import load_towers
from dpr.options import EncoderFlags, positive_int
from dpr.utils.device_defaults import ModelShape, device_defaults
from dpr.utils.flags import flag, value_problem
from dpr.utils.io import InputError, atomic_path, check_writable_dir, publish_then_mark, remove_stale_temps
from dpr.utils.precision import default_device, resolve_amp_dtype

logger = logging.getLogger("generate_dense_embeddings")

ENC = "encoding"


@dataclass(frozen=True)
class EncodeConfig(EncoderFlags):
    """generate_dense_embeddings.py's settings: the shared model flags, then its own."""

    ctx_file: str = flag(None, group=ENC, required=True, help=(
        "passages.tsv (header id\\ttext\\ttitle) or one of its shards."))
    out_file: str = flag(None, group=ENC, required=True, help=(
        "Output prefix: writes {out_file}_shard{k}.npy and {out_file}_shard{k}.ids.txt."))
    shard_id: int = flag(0, group=ENC, type=int, help="Which contiguous part of --ctx_file to encode (0-based).")
    num_shards: int = flag(1, group=ENC, type=positive_int, help="Into how many parts --ctx_file is split.")
    batch_size: int | None = flag(None, group=ENC, type=positive_int, help=(
        "Passages per forward pass (halved automatically on CUDA out-of-memory). Default: for the device: 128 on "
        "CPU; on CUDA sized from the card's memory, the model and --p_sequence_length (dpr/utils/device_defaults.py)."))
    block_size: int = flag(DEFAULT_BLOCK_SIZE, group=ENC, type=positive_int, help=(
        "Passages read, tokenized (in background threads) and length-sorted at a time."))
    save_fp16: bool = flag(False, group=ENC, action="store_true", help=(
        "Store vectors as float16: halves the .npy files on disk and the page cache that reading them takes. Search "
        "converts them back: a flat CPU index holds float32 (4 bytes a value) whatever the file; for a half-size "
        "index use --faiss_fp16 on GPU, or an IVF-PQ/HNSW index."))
    overwrite: bool = flag(False, group=ENC, action="store_true", help=(
        "Re-encode even when the shard's files are complete and its record matches this run."))
    num_threads: int | None = flag(None, group=ENC, type=positive_int, help="torch CPU threads (default: torch's).")

    def __post_init__(self) -> None:
        problem = value_problem(self)  # each flag's own rule (positive_int, choices), as the parser applies it
        if problem:
            raise ValueError(problem)
        if not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"--shard_id must be in [0, {self.num_shards}), got {self.shard_id}")

    @property
    def prefix(self) -> str:
        return f"{self.out_file}_shard{self.shard_id}"


def count_passages(ctx_file: str) -> tuple[int, dict]:
    """(passage rows, the record's `source`: size and hash of the whole file), in one read of the file."""
    digest = source_hasher()
    total = count_passages_tsv(ctx_file, digest)
    return total, source_record(Path(ctx_file).stat().st_size, digest)


def load_passage_encoder(config: EncodeConfig) -> tuple[Encoder, object]:
    """The passage tower (only) and tokenizer, with the flags' overrides applied on top of the stored settings."""
    towers = load_towers(config.tower_options(), need="passage")
    return towers.passage, towers.tokenizer


def passage_record(config: EncodeConfig, fingerprint: ModelFingerprint, settings: EncoderSettings,
                   source: dict, start: int, stop: int, total: int) -> dict:
    """The record of what makes this shard (see records.py); `dim` is filled in once the model is loaded."""
    rows = {"shard_id": config.shard_id, "num_shards": config.num_shards, "start": start, "stop": stop,
            "total": total}
    info = {"model": config.model_name, "source": str(config.ctx_file)}
    return records.passage_record(fingerprint, settings, config.p_sequence_length, source, rows,
                                  "float16" if config.save_fp16 else "float32", info)


def expected_settings(config: EncodeConfig, dirs: model_sources.ModelDirs | None = None) -> EncoderSettings | None:
    """The passage tower's settings as loading will give them: stored in its directory (else defaults), then the
    flags' overrides on top (dpr.models.source.expected_settings, which dense_retriever.py's pairing check uses too).
    Checked against the loaded tower before anything is written."""
    return model_sources.expected_settings(config.tower_options(), "passage", dirs)


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


def encode_shard(config: EncodeConfig) -> Path:
    """Encode this shard (unless already made exactly so); returns the .npy path."""
    npy, ids_path = shard_paths(config.prefix)
    check_writable_dir(npy.parent)
    model = config.model_name
    total, source = count_passages(config.ctx_file)
    start, stop = shard_range(total, config.shard_id, config.num_shards)
    if stop <= start:
        raise InputError(config.ctx_file, f"shard {config.shard_id} of {config.num_shards} is empty: the file has "
                                          f"{total} passages")
    old = older(read_record(npy)) if npy.is_file() else None
    if old and not config.overwrite:
        raise InputError(record_path(npy), f"{old}: re-encode it with --overwrite (or keep using it with that "
                                           f"version)")
    dirs = model_sources.resolve_model(model)
    fingerprint = dirs_fingerprint(dirs)
    wanted = None
    if fingerprint is not None:  # decide before loading the model
        wanted = passage_record(config, fingerprint, expected_settings(config, dirs), source, start, stop, total)
        why = shard_status(config.prefix, wanted)
        if why is None and not config.overwrite:
            logger.info("%s is complete and its record matches this run: skipping (use --overwrite to re-encode)",
                        npy)
            return npy
        logger.info("%s: %s: encoding", npy, "--overwrite" if why is None else why)

    encoder, tokenizer = load_passage_encoder(config)
    fingerprint = fingerprint or dirs_fingerprint(model_sources.resolve_model(model))
    if fingerprint is None:
        raise InputError(model, "the model's files are not on this disk, so the vectors cannot record it")
    record = passage_record(config, fingerprint, encoder.settings, source, start, stop, total)
    dim = record["dim"] = encoder.hidden_size
    if wanted is not None and wanted["settings"] != record["settings"]:
        logger.warning("the loaded passage tower's settings %s differ from the expected %s: recording the loaded "
                       "ones", record["settings"], wanted["settings"])
    for stale in remove_stale_temps(npy) + remove_stale_temps(ids_path) + remove_stale_temps(record_path(npy)):
        logger.info("removed %s (left by an interrupted run)", stale)
    device = default_device()
    amp = resolve_amp_dtype(device, config.precision)
    cast_for_inference(encoder.to(device), half_weights_dtype(device, amp))
    batch_size = config.batch_size or device_defaults(device, ModelShape.of(encoder), config.q_sequence_length,
                                                      config.p_sequence_length, 1, 1).encode_batch
    logger.info("shard %d/%d: passages [%d, %d) of %d from %s -> %s (dim %d, %s, amp %s, batch %d%s)",
                config.shard_id, config.num_shards, start, stop, total, config.ctx_file, npy, dim, device, amp,
                batch_size, "" if config.batch_size else ", the device's default")
    ids: list[str] = []

    def texts():
        for pid, text, title in read_passages_tsv(config.ctx_file, start, stop):
            ids.append(pid)
            yield passage_input(text, title)

    t0 = time.time()
    # the old record goes first and the new one comes last: a shard is reused only once all three files are in place
    with publish_then_mark(record_path(npy), record):
        with atomic_path(npy) as tmp, tqdm(total=stop - start, unit="passage", desc=f"shard {config.shard_id}",
                                           smoothing=0.05) as bar:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16 if config.save_fp16 else np.float32,
                                            shape=(stop - start, dim))
            row, first = 0, None
            for block in encode_stream(encoder, tokenizer, texts(), "passage", config.p_sequence_length,
                                       batch_size, device, amp, config.block_size, on_done=bar.update):
                out[row : row + len(block)] = block
                row += len(block)
                first = first or (time.time(), row)
            if row != stop - start or len(ids) != row:
                raise InputError(config.ctx_file, f"read {len(ids)} passages for shard {config.shard_id}, expected "
                                                  f"{stop - start} (did the file change while encoding?)")
            out.flush()
            del out
            write_ids(ids_path, ids)
        if source_fingerprint(config.ctx_file) != source:
            raise InputError(config.ctx_file, "the file changed while it was being encoded; run again")
    end = time.time()
    elapsed = end - t0
    steady = (f"{(row - first[1]) / max(end - first[0], 1e-9):.1f} passages/s after the first block" if first and
              row > first[1] else "one block")
    logger.info("wrote %s + %s + %s: %d passages in %.1fs (start-up to the first block %.1fs, then %s)", npy,
                ids_path.name, record_path(npy).name, row, elapsed, (first[0] - t0) if first else 0.0, steady)
    return npy
