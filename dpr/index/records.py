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
import shlex
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


SEARCH_FLAGS = {"pooling": lambda v: f"--pooling {shlex.quote(str(v))}",  # the settings flags at search time set
                "lowercase": lambda v: "--do_lower_case" if v else None,
                "passage_prefix": lambda v: f"--passage_prefix {shlex.quote(str(v))}"}
API_NAMES = {"pooling": "pooling", "lowercase": "lowercase", "passage_prefix": "passage_prefix"}


def pairing_flags(settings: dict[str, Any], keys: list[str], tunable: tuple[str, ...]) -> str | None:
    """The search-time flags that give the passage tower these `settings` for `keys` ('--pooling cls
    --do_lower_case'), or None when one of them no flag can set (then only re-encoding pairs)."""
    flags = [SEARCH_FLAGS[k](settings.get(k)) if k in tunable else None for k in keys]
    return None if any(f is None for f in flags) else " ".join(flags)


def record_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """'pooling 'cls' vs 'mean'', 'max_length 256 vs 384', 'source (... vs ...)': what two passage records disagree
    on among the settings, the length cap and the source (each field named, with both values)."""
    out = []
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    out += [f"{k} {sa.get(k)!r} vs {sb.get(k)!r}" for k in sorted(sa.keys() | sb.keys()) if sa.get(k) != sb.get(k)]
    if a.get("max_length") != b.get("max_length"):
        out.append(f"length cap (max_length) {a.get('max_length')!r} vs {b.get('max_length')!r}")
    if a.get("source") != b.get("source"):
        out.append(f"source file ({describe_source(a)} vs {describe_source(b)})")
    return out


def describe_source(record: dict[str, Any]) -> str:
    """'passages.tsv, 2050 bytes, sha256 c90ed2544f33': a record's source file, for messages."""
    src = record.get("source") or {}
    name = (record.get("info") or {}).get("source")
    return f"{name + ', ' if name else ''}{src.get('size')} bytes, sha256 {str(src.get(SOURCE_HASH))[:12]}"


def encode_command(first_path: Path, first: dict[str, Any], shard_id: int, num_shards: int) -> str:
    """The generate_dense_embeddings.py command that encodes shard `shard_id` as the shard `first` records was
    encoded (model, source, length cap, pooling, lower-casing, passage prefix, dtype), so its record pairs."""
    info, settings = first.get("info") or {}, first.get("settings") or {}
    parts = ["generate_dense_embeddings.py", "--model_file", info.get("model", "MODEL"), "--ctx_file",
             info.get("source", "PASSAGES.tsv"), "--out_file", _out_prefix(first_path), "--shard_id", str(shard_id),
             "--num_shards", str(num_shards)]
    if first.get("max_length") is not None:
        parts += ["--p_sequence_length", str(first["max_length"])]
    if settings.get("pooling") is not None:
        parts += ["--pooling", str(settings["pooling"])]
    if settings.get("lowercase"):
        parts.append("--do_lower_case")
    if "passage_prefix" in settings:
        parts += ["--passage_prefix", str(settings["passage_prefix"])]
    if first.get("dtype") == "float16":
        parts.append("--save_fp16")
    return shlex.join(parts)


def check_pairing(passage_records: list[tuple[Path, dict[str, Any] | None]], side_model: dict[str, Any] | None,
                  side_label: str, allow: bool, expected: dict[str, Any] | None = None,
                  tunable: tuple[str, ...] = ()) -> None:
    """Refuse passage vectors whose model or encoder settings are not the question side's, that were recorded by an
    older version, or that disagree among themselves.

    `side_model` is the `model` part of the question side (the loaded question tower's fingerprint or the saved
    question vectors' record; None when the latter has none); `side_label` names it in messages. `expected`: the
    passage-record settings this run needs (pooling, normalize, lowercase of the question side; passage_prefix as
    this run would give the passage tower), any subset; `tunable`: those this run's flags can set (then a settings
    mismatch they would fix names them). With `allow`, every problem is logged instead of raised.
    """
    reencode = ("Re-encode the passages with this model (generate_dense_embeddings.py), or pass "
                "--allow_mismatched_vectors to search anyway")
    problems: list[tuple[Path, str, str]] = []
    first_path, first = passage_records[0]
    for path, rec in passage_records:
        if rec is None or rec.get("kind") != "passage_vectors":
            problems.append((path, f"has no record of the model that made it ({record_path(path).name} missing or "
                                   f"not a passage-vectors record), so it cannot be checked against {side_label}",
                             reencode))
        elif older(rec):
            problems.append((path, f"its record ({record_path(path).name}) was {older(rec)}, so it cannot be "
                                   f"checked against {side_label}", reencode))
        elif side_model is None or rec.get("model") != side_model:
            problems.append((path, f"passage vectors made by {describe_model(rec)} do not pair with {side_label}",
                             reencode))
        elif first is not None and record_differences(first, rec):
            shard = (rec.get("rows") or {}).get("shard_id")
            n = (first.get("rows") or {}).get("num_shards")
            fix = (f"Re-encode it as {first_path.name} was: `{encode_command(first_path, first, shard, n)}`"
                   if isinstance(shard, int) and isinstance(n, int) and 0 <= shard < n else
                   "Re-encode it as the first shard was (generate_dense_embeddings.py)")
            problems.append((path, f"encoded otherwise than {first_path.name}: "
                                   f"{'; '.join(record_differences(rec, first))} (this shard vs {first_path.name})",
                             f"{fix}, or pass --allow_mismatched_vectors to search anyway"))
        elif expected and any((rec.get("settings") or {}).get(k) != v for k, v in expected.items()):
            settings = rec.get("settings") or {}
            keys = [k for k, v in expected.items() if settings.get(k) != v]
            flags = pairing_flags(settings, keys, tunable)
            remedy = reencode if flags is None else (
                f"Search with `{flags}` (Retriever.load: "
                f"{', '.join(f'{API_NAMES[k]}={settings.get(k)!r}' for k in keys)}) to pair with them, or re-encode "
                f"the passages with this run's settings (generate_dense_embeddings.py), or pass "
                f"--allow_mismatched_vectors to search anyway")
            problems.append((path, f"passage vectors encoded with {_show(settings, keys)} do not pair with "
                                   f"{side_label}, which uses {_show(expected, keys)}", remedy))
    for path, message, remedy in problems:
        if allow:
            logger.warning("%s: %s (searching anyway: --allow_mismatched_vectors)", path, message)
        else:
            raise VectorsMismatchError(path, f"{message}. {remedy}")


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
        commands = "; ".join(encode_command(first_path, first, k, n) for k in missing)
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
