"""Embedding shard files: `<prefix>.npy` (float32 or float16, [N, dim]) + `<prefix>.ids.txt` (one passage id a
line, row order). Written atomically (ids first, the .npy last), read back memory-mapped, never pickled."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpr.index.records import RECORD_SUFFIX
from dpr.utils.io import InputError, atomic_path, atomic_write, iter_lines

NPY_SUFFIX = ".npy"
IDS_SUFFIX = ".ids.txt"


def shard_paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """(vectors .npy, ids .ids.txt) for a shard prefix; a path ending in .npy is accepted as the prefix too."""
    prefix = str(prefix)
    if prefix.endswith(NPY_SUFFIX):
        prefix = prefix[: -len(NPY_SUFFIX)]
    return Path(prefix + NPY_SUFFIX), Path(prefix + IDS_SUFFIX)


def write_ids(path: str | os.PathLike, ids: list[str]) -> None:
    for n, pid in enumerate(ids, 1):
        if not pid or any(c in pid for c in "\r\n"):
            raise ValueError(f"id #{n} {pid!r} is empty or has a line break: it cannot go in {path}")
    with atomic_write(path) as f:
        f.writelines(pid + "\n" for pid in ids)


def read_ids(path: str | os.PathLike) -> list[str]:
    return [line for _, line in iter_lines(path)]


def save_shard(prefix: str | os.PathLike, ids: list[str], vectors: np.ndarray, fp16: bool = False) -> Path:
    """Write one shard (ids then vectors, each atomically); returns the .npy path."""
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise ValueError(f"{len(ids)} ids for vectors of shape {vectors.shape}")
    npy, ids_path = shard_paths(prefix)
    write_ids(ids_path, ids)
    with atomic_path(npy) as tmp:
        np.save(tmp, vectors.astype(np.float16 if fp16 else np.float32, copy=False))
    return npy


@dataclass
class Shard:
    """One embeddings file, memory-mapped, with its ids."""

    path: Path
    ids: list[str]
    vectors: np.ndarray  # [N, dim] float32/float16, memory-mapped

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def map_npy(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a .npy array (only the header is read now); InputError when it is not one."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (ValueError, OSError) as e:
        raise InputError(path, f"not a .npy array file ({e}); embeddings are .npy + .ids.txt, never pickles") from None


def load_shard(path: str | os.PathLike) -> Shard:
    """Open a shard (by its .npy path or prefix) and check it: 2-D float vectors, as many ids as rows, not empty."""
    npy, ids_path = shard_paths(path)
    vectors = map_npy(npy)
    shape = vectors.shape
    if len(shape) != 2 or vectors.dtype not in (np.float32, np.float16):
        raise InputError(npy, f"expected a 2-D float32/float16 array, found shape {shape} dtype {vectors.dtype}")
    if shape[0] == 0:
        raise InputError(npy, "empty shard: no vectors")
    if not ids_path.is_file():
        raise InputError(ids_path, f"ids file missing (it must sit beside {npy.name})")
    ids = read_ids(ids_path)
    if len(ids) != shape[0]:
        raise InputError(ids_path, f"{len(ids)} ids but {npy.name} has {shape[0]} vectors")
    return Shard(npy, ids, vectors)


def shard_is_complete(prefix: str | os.PathLike, count: int, dim: int) -> bool:
    """True when both files of a shard exist and hold `count` rows of `dim` (so a re-run may skip it)."""
    npy, ids_path = shard_paths(prefix)
    if not (npy.is_file() and ids_path.is_file()):
        return False
    try:
        shape = map_npy(npy).shape
        n_ids = sum(1 for _ in iter_lines(ids_path))
    except InputError:
        return False
    return shape == (count, dim) and n_ids == count


def _shard_of(path: str) -> Path | None:
    """The shard .npy a file a glob matched stands for: itself, or the shard whose side file it is
    (`emb_shard0.ids.txt`, `emb_shard0.meta.json`); None for anything else (a saved index, a stray file)."""
    if path.endswith(NPY_SUFFIX):
        return Path(path)
    for suffix in (IDS_SUFFIX, RECORD_SUFFIX):
        if path.endswith(suffix):
            base = path[: -len(suffix)]
            npy = Path(base if base.endswith(NPY_SUFFIX) else base + NPY_SUFFIX)
            return npy if npy.is_file() else None
    return None


def expand_shards(pattern: str) -> list[Path]:
    """The .npy files a glob (or a single prefix/path) names, sorted naturally (shard2 before shard10). A glob that
    also matches the shards' own side files (DPR's `emb_*` matches `emb_shard0.meta.json`) selects the shards."""
    if glob.has_magic(pattern):
        npys = sorted({npy for p in glob.glob(pattern) if (npy := _shard_of(p)) is not None}, key=_natural_key)
    else:
        npy = shard_paths(pattern)[0]
        if Path(pattern).is_dir():
            raise InputError(pattern, "a directory, not an embeddings file: pass it as --index_dir (or a glob such "
                                      "as DIR/emb_shard*.npy)")
        if not npy.is_file():
            raise InputError(pattern, "no such directory or embeddings file")
        npys = [npy]
    if not npys:
        raise InputError(pattern, "no embedding files match")
    return npys


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def open_shards(pattern: str) -> list[Shard]:
    """Open every shard a glob names and check that they share one dimension and no id repeats."""
    shards = [load_shard(p) for p in expand_shards(pattern)]
    dim = shards[0].dim
    seen: set[str] = set()
    for shard in shards:
        if shard.dim != dim:
            raise InputError(shard.path, f"dimension {shard.dim} differs from {shards[0].path.name} ({dim})")
        for pid in shard.ids:
            if pid in seen:
                raise InputError(shard_paths(shard.path)[1], f"passage id {pid!r} appears in more than one row/shard")
            seen.add(pid)
    return shards
