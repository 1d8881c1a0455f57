"""The seed's --encode_q_and_save / --q_encoding_path: question vectors saved as .npy (never a pickle) with the
question ids beside them (`<path>.qids.txt`), so encoding (GPU) and search (CPU) can run on different machines."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dpr.index.embeddings import map_npy, read_ids, write_ids
from dpr.utils.io import InputError, atomic_write


def qids_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".qids.txt")


def save_question_vectors(path: str | os.PathLike, qids: list[str], vectors: np.ndarray) -> None:
    """Write the ids, then the vectors (.npy format at exactly `path`), each atomically."""
    write_ids(qids_path(path), qids)
    with atomic_write(path, "wb") as f:
        np.save(f, np.asarray(vectors, dtype=np.float32))


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
