"""The reference setup's --encode_q_and_save / --q_encoding_path: question vectors saved as .npy (never a pickle) with the
question ids beside them (`<path>.qids.txt`) and the record of what made them (`<path>.meta.json`, see
dpr/index/records.py), so encoding (GPU) and search (CPU) can run on different machines."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dpr.index.embeddings import map_npy, read_ids, write_ids
from dpr.index.records import record_path, write_record
from dpr.utils.io import InputError, atomic_write


def qids_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".qids.txt")


def save_question_vectors(path: str | os.PathLike, qids: list[str], vectors: np.ndarray, record: dict) -> None:
    """Write the ids, then the vectors (.npy format at exactly `path`), then their record, each atomically (an old
    record is removed first, so vectors are never paired with another run's record)."""
    record_path(path).unlink(missing_ok=True)
    write_ids(qids_path(path), qids)
    with atomic_write(path, "wb") as f:
        np.save(f, np.asarray(vectors, dtype=np.float32))
    write_record(path, {**record, "dim": int(vectors.shape[1]), "count": len(qids)})


def load_question_vectors(path: str | os.PathLike, qids: list[str]) -> np.ndarray:
    """Vectors saved for exactly these question ids (same order); a mismatch is an error that names the file."""
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
    return np.asarray(vectors, dtype=np.float32)
