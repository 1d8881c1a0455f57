"""The reference setup's --encode_q_and_save / --q_encoding_path: question vectors saved as .npy (never a pickle) with the
question ids beside them (`<path>.qids.txt`) and the record of what made them (`<path>.meta.json`, see
dpr/index/records.py, with a hash of the question ids and texts), so encoding (GPU) and search (CPU) can run on
different machines. Vectors are reused only for the same ids with the same texts (DPR files without ids get
positional ids, so the ids alone would match another file of as many questions)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from dpr.index.embeddings import map_npy, read_ids, write_ids
from dpr.index.records import older, read_record, record_path, write_record
from dpr.utils.io import InputError, atomic_write


def qids_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".qids.txt")


def questions_sha256(qids: list[str], texts: list[str]) -> str:
    """sha256 of the (id, text) pairs, in order: what saved question vectors are keyed on."""
    return hashlib.sha256(json.dumps(list(zip(qids, texts, strict=True)), ensure_ascii=False).encode()).hexdigest()


def save_question_vectors(path: str | os.PathLike, qids: list[str], vectors: np.ndarray, record: dict) -> None:
    """Write the ids, then the vectors (.npy format at exactly `path`), then their record, each atomically (an old
    record is removed first, so vectors are never paired with another run's record)."""
    record_path(path).unlink(missing_ok=True)
    write_ids(qids_path(path), qids)
    with atomic_write(path, "wb") as f:
        np.save(f, np.asarray(vectors, dtype=np.float32))
    write_record(path, {**record, "dim": int(vectors.shape[1]), "count": len(qids)})


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
