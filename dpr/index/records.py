"""What made a vectors file: a small JSON record beside it (`emb_shard0.meta.json`, `q.npy.meta.json`).

A record holds the fingerprint of the model (both towers and the tokenizer, by content), the encoder settings, the
length cap, the source (its size and a hash of all of it) and the rows (shard k of n: [start, stop) of the source's
`total`); `info` holds what helps a person (paths, times) and is never compared. A vectors file counts as made by a
run only when its record's identity equals the one the run would write, so a cache never outlives what made it.

Before a search, `check_pairing` holds the passage vectors to the question side (model and encoder settings) and
`check_coverage` holds the shards to the collection (they tile it exactly). A record of another format (an older
version of this tool) is named as such, never silently re-made nor read as if current.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from dpr.data.shards import shard_range
from dpr.utils.io import InputError, write_json

logger = logging.getLogger(__name__)

RECORD_SUFFIX = ".meta.json"
FORMAT = 2  # 2: settings compared at search, whole-file source hash, rows' total, question texts' hash
# Of the whole source file, fed while the file is counted anyway (its cost per GiB: docs/benchmarks.md, section 6).
SOURCE_HASH = "sha256"
BLOCK = 1 << 22
SHARED_SETTINGS = ("pooling", "normalize", "lowercase")  # must agree between the question and the passage side


class VectorsMismatchError(InputError):
    """Vectors made by a different model (or settings) than the ones they are used with."""


def record_path(vectors_path: str | os.PathLike) -> Path:
    """`emb_shard0.npy` -> `emb_shard0.meta.json`; any other file (`q.npy` written by name) -> `q.npy.meta.json`."""
    path = Path(vectors_path)
    if path.suffix == ".npy" and "_shard" in path.stem:
        return path.with_name(path.stem + RECORD_SUFFIX)
    return Path(str(path) + RECORD_SUFFIX)


def source_hasher() -> hashlib._Hash:
    """The hash of a source file's bytes (fed block by block by whoever reads the file anyway)."""
    return hashlib.new(SOURCE_HASH)


def source_record(size: int, hasher) -> dict[str, Any]:
    """The `source` part of a record from a file's size and the hasher that has seen all of its bytes."""
    return {"size": size, SOURCE_HASH: hasher.hexdigest()}


def source_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Size plus a hash of the whole file (any edit anywhere changes it). Never the path or the mtime."""
    h, size = source_hasher(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
            size += len(block)
    return source_record(size, h)


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
    """The record beside a vectors file (of any format: see `older`), or None when there is none or it is
    unreadable."""
    path = record_path(vectors_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def older(record: dict[str, Any] | None) -> str | None:
    """Why a record cannot be read as current: '... older version ...' for another format; None when it is
    current (or absent)."""
    if record is None or record.get("format") == FORMAT:
        return None
    return (f"made by an older version of this tool (record format {record.get('format')!r}; this version writes "
            f"{FORMAT})")


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
    start, stop of the source's `total` passage rows; `dim` is added once the model is loaded."""
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


def _show(settings: dict[str, Any], keys) -> str:
    return ", ".join(f"{k} {settings.get(k)!r}" for k in keys)


def check_pairing(passage_records: list[tuple[Path, dict[str, Any] | None]], side_model: dict[str, Any] | None,
                  side_label: str, allow: bool, expected: dict[str, Any] | None = None) -> None:
    """Refuse passage vectors whose model or encoder settings are not the question side's, that were recorded by an
    older version, or that disagree among themselves.

    `side_model` is the `model` part of the question side (the loaded question tower's fingerprint or the saved
    question vectors' record; None when the latter has none); `side_label` names it in messages. `expected`: the
    passage-record settings this run needs (pooling, normalize, lowercase of the question side; passage_prefix as
    this run would give the passage tower), any subset. With `allow`, every problem is logged instead of raised.
    """
    problems: list[tuple[Path, str]] = []
    first_path, first = passage_records[0]
    for path, rec in passage_records:
        if rec is None or rec.get("kind") != "passage_vectors":
            problems.append((path, f"has no record of the model that made it ({record_path(path).name} missing or "
                                   f"not a passage-vectors record), so it cannot be checked against {side_label}"))
        elif older(rec):
            problems.append((path, f"its record ({record_path(path).name}) was {older(rec)}, so it cannot be "
                                   f"checked against {side_label}"))
        elif side_model is None or rec.get("model") != side_model:
            problems.append((path, f"passage vectors made by {describe_model(rec)} do not pair with {side_label}"))
        elif expected and any((rec.get("settings") or {}).get(k) != v for k, v in expected.items()):
            keys = [k for k, v in expected.items() if (rec.get("settings") or {}).get(k) != v]
            problems.append((path, f"passage vectors encoded with {_show(rec.get('settings') or {}, keys)} do not "
                                   f"pair with {side_label}, which uses {_show(expected, keys)}"))
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


class PartialIndexError(InputError):
    """Passage shards that do not tile their collection: rows missing or encoded twice."""


def _out_prefix(path: Path) -> str:
    """`out/emb_shard3.npy` -> `out/emb` (generate_dense_embeddings.py's --out_file)."""
    return str(path.with_name(re.sub(r"_shard\d+$", "", path.stem)))


def _vector_rows(path: Path) -> int | None:
    """Rows of a .npy file from its header (None when it cannot be read: loading it says why)."""
    try:  # the header only (this module sits below dpr/index/embeddings.py, which reads the vectors themselves)
        with open(path, "rb") as f:
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape = read[np.lib.format.read_magic(f)](f)[0]
        return int(shape[0])
    except (OSError, ValueError, IndexError, KeyError):
        return None


def coverage_problem(passage_records: list[tuple[Path, dict[str, Any]]]) -> tuple[Path, str] | None:
    """(file, what is wrong) when the shards do not tile one collection exactly (one source, one split into n
    shards, every row once); None when they do."""
    first_path, first = passage_records[0]
    source_name = (first.get("info") or {}).get("source", "the passages file")
    for path, rec in passage_records:
        if rec.get("source") != first.get("source"):
            return path, f"encoded from another source file than {first_path.name} ({source_name})"
        r = rec.get("rows") or {}
        if (r.get("num_shards"), r.get("total")) != ((first.get("rows") or {}).get("num_shards"),
                                                    (first.get("rows") or {}).get("total")):
            return path, (f"shard {r.get('shard_id')} of {r.get('num_shards')} over {r.get('total')} rows, but "
                          f"{first_path.name} is of another split")
    rows = first["rows"]
    n, total = rows["num_shards"], rows["total"]
    by_id: dict[int, list[Path]] = {}
    for path, rec in passage_records:
        r = rec["rows"]
        if (r["start"], r["stop"]) != shard_range(total, r["shard_id"], n):
            return path, f"rows [{r['start']}, {r['stop']}) are not shard {r['shard_id']} of {n} of {total} rows"
        held = _vector_rows(path)
        if held is not None and held != r["stop"] - r["start"]:
            return path, (f"holds {held} vectors but its record says rows [{r['start']}, {r['stop']}) of "
                          f"{source_name}: re-encode it")
        by_id.setdefault(r["shard_id"], []).append(path)
    doubled = {k: paths for k, paths in sorted(by_id.items()) if len(paths) > 1}
    if doubled:
        k, paths = next(iter(doubled.items()))
        start, stop = shard_range(total, k, n)
        return paths[1], (f"rows [{start}, {stop}) of {source_name} (shard {k} of {n}) are also in "
                          f"{paths[0]}: pass each shard once")
    missing = [k for k in range(n) if k not in by_id]
    if missing:
        gaps = [shard_range(total, k, n) for k in missing]
        covered = total - sum(stop - start for start, stop in gaps)
        model = (first.get("info") or {}).get("model", "MODEL")
        commands = "; ".join(f"generate_dense_embeddings.py --model_file {model} --ctx_file {source_name} "
                             f"--out_file {_out_prefix(first_path)} --shard_id {k} --num_shards {n}" for k in missing)
        return first_path, (f"the shards cover {covered} of {total} passages: rows "
                            f"{', '.join(f'[{a}, {b})' for a, b in gaps)} of {source_name} (shard "
                            f"{', '.join(map(str, missing))} of {n}) are missing. Encode them with `{commands}`, or "
                            f"pass --allow_partial_index to search only these")
    return None


def check_coverage(passage_records: list[tuple[Path, dict[str, Any] | None]], allow_partial: bool) -> None:
    """Refuse shards that do not tile one collection exactly (a shard missing or passed twice, shards of two
    sources or two splits), unless `allow_partial` (then a warning). Records that are missing or of an older format
    were dealt with by `check_pairing`; coverage is then not checked (a warning says so)."""
    if any(rec is None or rec.get("kind") != "passage_vectors" or older(rec) for _, rec in passage_records):
        logger.warning("some passage vectors have no current record: not checking that the shards cover the "
                       "collection")
        return
    problem = coverage_problem(passage_records)  # type: ignore[arg-type]
    if problem is None:
        return
    path, message = problem
    if allow_partial:
        logger.warning("%s: %s (searching anyway: --allow_partial_index)", path, message)
    else:
        raise PartialIndexError(path, message)
