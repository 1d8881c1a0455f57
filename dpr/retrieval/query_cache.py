"""The reference setup's --encode_q_and_save / --q_encoding_path: question vectors saved as .npy (never a pickle) with the
question ids beside them (`<path>.qids.txt`) and the record of what made them (`<path>.meta.json`, see
dpr/index/records.py, with a hash of the question ids and texts), so encoding (GPU) and search (CPU) can run on
different machines. Vectors are reused only for the same ids with the same texts (DPR files without ids get
positional ids, so the ids alone would match another file of as many questions)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from dpr.index.embeddings import map_npy, read_ids, write_ids
from dpr.index.records import (
    FORMAT,
    SHARED_SETTINGS,
    VectorsMismatchError,
    describe_model,
    older,
    read_record,
    record_path,
    settings_dict,
)
from dpr.retrieval.dense import check_pairs
from dpr.utils.io import InputError, atomic_write, publish_then_mark

logger = logging.getLogger(__name__)


def qids_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".qids.txt")


def questions_sha256(qids: list[str], texts: list[str]) -> str:
    """sha256 of the (id, text) pairs, in order: what saved question vectors are keyed on."""
    return hashlib.sha256(json.dumps(list(zip(qids, texts, strict=True)), ensure_ascii=False).encode()).hexdigest()


def save_question_vectors(path: str | os.PathLike, qids: list[str], vectors: np.ndarray, record: dict) -> None:
    """Write the ids, then the vectors (.npy format at exactly `path`), then their record, each atomically (an old
    record is removed first, so vectors are never paired with another run's record)."""
    with publish_then_mark(record_path(path), {**record, "dim": int(vectors.shape[1]), "count": len(qids)}):
        write_ids(qids_path(path), qids)
        with atomic_write(path, "wb") as f:
            np.save(f, np.asarray(vectors, dtype=np.float32))


def load_question_vectors(path: str | os.PathLike, qids: list[str], texts: list[str] | None = None) -> np.ndarray:
    """Vectors saved for exactly these question ids (same order) and, when `texts` are given, these texts (the
    record's hash); a mismatch is an error that names the file."""
    vectors = map_npy(path)
    ids_file = qids_path(path)
    if not ids_file.is_file():
        raise InputError(ids_file, f"question ids missing for {path}; re-encode with --re_encode_q")
    saved = read_ids(ids_file)
    if saved != list(qids):
        raise InputError(ids_file, f"saved for {len(saved)} other questions than the {len(qids)} in --qa_file; "
                                   "re-encode with --re_encode_q")
    if vectors.ndim != 2 or vectors.shape[0] != len(qids):
        raise InputError(path, f"shape {vectors.shape} does not fit {len(qids)} questions")
    record = read_record(path)
    if texts is not None and record is not None and older(record) is None:  # else the pairing check names it
        if record.get("questions_sha256") != questions_sha256(qids, texts):
            raise InputError(record_path(path), f"saved for {len(qids)} questions with these ids but other texts "
                                                f"than --qa_file's; re-encode with --re_encode_q")
    return np.asarray(vectors, dtype=np.float32)


def question_record(side: dict, settings, max_length: int, qids: list[str], texts: list[str], source: str) -> dict:
    """The record saved beside question vectors: the model (`side`, dpr.retrieval.dense.model_side), the question
    side's settings (its prefix included) and length cap, and a hash of the question ids and texts."""
    return {"format": FORMAT, "kind": "question_vectors", "model": side["model"],
            "settings": settings_dict(settings, "query"), "max_length": max_length, "dtype": "float32",
            "questions_sha256": questions_sha256(qids, texts), "info": {**side["info"], "questions": str(source)}}


def saved_questions_problem(record: dict | None, asked: dict) -> str | None:
    """What keeps saved question vectors' record from serving a run that asks for `asked` (max_length, pooling,
    query_prefix, lowercase; None = not asked): none, an older version's, or other settings; None when it serves."""
    if record is None or record.get("kind") != "question_vectors":
        return "have no record of what made them (re-encode them with --re_encode_q)"
    if older(record):
        return f"were {older(record)}: re-encode them with --re_encode_q"
    found = {**(record.get("settings") or {}), "max_length": record.get("max_length")}
    differ = [k for k, v in asked.items() if v is not None and found.get(k) != v]
    if differ:
        return (f"were encoded with {', '.join(f'{k} {found.get(k)!r}' for k in differ)} but this run asks for "
                f"{', '.join(f'{k} {asked[k]!r}' for k in differ)} (--q_sequence_length, --pooling, --query_prefix, "
                f"--do_lower_case): re-encode them with --re_encode_q")
    return None


def check_saved_pairs(path: str | os.PathLike, passage_paths: list[Path], asked: dict, passage_prefix: str | None,
                      allow: bool = False, allow_partial: bool = False) -> None:
    """Stop unless the saved question vectors at `path` serve this run (`saved_questions_problem`) and the passage
    vectors pair with them (dpr.retrieval.dense.check_pairs); with `allow` / `allow_partial` a warning instead."""
    record = read_record(path)
    problem = saved_questions_problem(record, asked)
    if problem and not allow:
        raise VectorsMismatchError(path, f"the saved question vectors {problem}, or pass --allow_mismatched_vectors "
                                         f"to search anyway")
    if problem:
        logger.warning("%s: the saved question vectors %s (searching anyway: --allow_mismatched_vectors)", path,
                       problem)
    settings = (record or {}).get("settings") or {}
    expected = {k: settings[k] for k in SHARED_SETTINGS if k in settings}
    if passage_prefix is not None:
        expected["passage_prefix"] = passage_prefix
    check_pairs(passage_paths, record and record.get("model"),
                f"the saved question vectors {path} made by {describe_model(record or {})}", expected, allow,
                allow_partial, ("passage_prefix",))  # the rest was fixed when the questions were encoded
