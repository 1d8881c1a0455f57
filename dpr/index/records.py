"""What made a vectors file: a small JSON record beside it (`emb_shard0.meta.json`, `q.npy.meta.json`).

A record holds the fingerprint of the model (both towers and the tokenizer, by content), the encoder settings, the
length cap, the source and the rows; `info` holds what helps a person (paths, times) and is never compared. A
vectors file counts as made by a run only when its record's identity equals the one the run would write, so a cache
never outlives what made it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from dpr.utils.io import InputError, write_json

logger = logging.getLogger(__name__)

RECORD_SUFFIX = ".meta.json"
FORMAT = 1
SAMPLE_BYTES = 1 << 16  # bytes read at each of SAMPLES evenly spaced offsets of a source file
SAMPLES = 17


class VectorsMismatchError(InputError):
    """Vectors made by a different model (or settings) than the ones they are used with."""


def record_path(vectors_path: str | os.PathLike) -> Path:
    """`emb_shard0.npy` -> `emb_shard0.meta.json`; any other file (`q.npy` written by name) -> `q.npy.meta.json`."""
    path = Path(vectors_path)
    if path.suffix == ".npy" and "_shard" in path.stem:
        return path.with_name(path.stem + RECORD_SUFFIX)
    return Path(str(path) + RECORD_SUFFIX)


def source_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Size plus a sha256 of 17 evenly spaced 64 KiB samples (first and last included): cheap on a 10 GB file, and
    it changes when rows are added, removed or edited in a sampled region. Never the path or the mtime."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        offsets = sorted({max(0, min(size - SAMPLE_BYTES, size * i // (SAMPLES - 1))) for i in range(SAMPLES)})
        for off in offsets:
            f.seek(off)
            h.update(f.read(SAMPLE_BYTES))
    return {"size": size, "sample_sha256": h.hexdigest()}


def identity(record: dict[str, Any]) -> dict[str, Any]:
    """The compared part of a record (everything but `info`)."""
    return {k: v for k, v in record.items() if k != "info"}


def identity_sha256(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity(record), sort_keys=True).encode()).hexdigest()


def write_record(vectors_path: str | os.PathLike, record: dict[str, Any]) -> Path:
    path = record_path(vectors_path)
    write_json(path, record)
    return path


def read_record(vectors_path: str | os.PathLike) -> dict[str, Any] | None:
    """The record beside a vectors file, or None when there is none or it is unreadable."""
    path = record_path(vectors_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def differences(found: dict[str, Any] | None, wanted: dict[str, Any]) -> list[str]:
    """Names of the identity fields that differ (['record'] when there is none)."""
    if found is None:
        return ["record"]
    a, b = identity(found), identity(wanted)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def settings_dict(settings, kind: str) -> dict[str, Any]:
    """The encoder settings that shape one side's vectors (the other side's prefix left out)."""
    d = dataclasses.asdict(settings)
    d.pop("query_prefix" if kind == "passage" else "passage_prefix")
    return d


def passage_record(fingerprint, settings, max_length: int, source: dict[str, Any], rows: dict[str, int],
                   dtype: str, info: dict[str, Any]) -> dict[str, Any]:
    """The record of a passage-vectors file (what generate_dense_embeddings.py and the Retriever API write):
    `fingerprint` a ModelFingerprint, `settings` the passage tower's EncoderSettings, `rows` shard_id, num_shards,
    start, stop of the source's passage rows; `dim` is added once the model is loaded."""
    return {"format": FORMAT, "kind": "passage_vectors",
            "model": {"question_tower": fingerprint.question_tower, "passage_tower": fingerprint.passage_tower,
                      "tokenizer": fingerprint.tokenizer},
            "settings": settings_dict(settings, "passage"), "max_length": max_length, "source": source,
            "rows": rows, "dtype": dtype, "info": info}


def describe_model(record: dict[str, Any]) -> str:
    """'MODEL (question tower 1a2b3c4d5e6f, passage tower ...)' from a record, for messages."""
    m = record.get("model") or {}
    name = (record.get("info") or {}).get("model", "?")
    return (f"{name} (question tower {str(m.get('question_tower'))[:12]}, passage tower "
            f"{str(m.get('passage_tower'))[:12]})")


def check_pairing(passage_records: list[tuple[Path, dict[str, Any] | None]], side_model: dict[str, Any] | None,
                  side_label: str, allow: bool) -> None:
    """Refuse passage vectors whose model is not the question side's, or that disagree among themselves.

    `side_model` is the `model` part of the question side (the loaded question tower's fingerprint or the saved
    question vectors' record; None when the latter has none); `side_label` names it in messages. With `allow`,
    every problem is logged instead of raised.
    """
    problems: list[tuple[Path, str]] = []
    first_path, first = passage_records[0]
    for path, rec in passage_records:
        if rec is None or rec.get("kind") != "passage_vectors":
            problems.append((path, f"has no record of the model that made it ({record_path(path).name} missing or "
                                   f"not a passage-vectors record), so it cannot be checked against {side_label}"))
        elif side_model is None or rec.get("model") != side_model:
            problems.append((path, f"passage vectors made by {describe_model(rec)} do not pair with {side_label}"))
        elif first is not None and any(rec.get(k) != first.get(k) for k in ("settings", "max_length", "source")):
            problems.append((path, f"made with other encoder settings, length cap or source file than "
                                   f"{first_path.name}"))
    for path, message in problems:
        if allow:
            logger.warning("%s: %s (searching anyway: --allow_mismatched_vectors)", path, message)
        else:
            raise VectorsMismatchError(path, f"{message}. Re-encode the passages with this model "
                                             f"(generate_dense_embeddings.py), or pass --allow_mismatched_vectors "
                                             f"to search anyway")
