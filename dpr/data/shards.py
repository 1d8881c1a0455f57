"""Split passages.tsv into N contiguous shard files (same header) for parallel encoding."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from dpr.data.formats import PASSAGES_HEADER, read_passages_tsv
from dpr.utils.io import atomic_write


def shard_path(passages_tsv: str | os.PathLike, k: int, n: int) -> Path:
    """`passages_shard{k}_of{n}.tsv` next to passages.tsv."""
    p = Path(passages_tsv)
    return p.with_name(f"{p.stem}_shard{k}_of{n}{p.suffix}")


def write_shards(passages_tsv: str | os.PathLike, num_shards: int, total: int) -> list[Path]:
    """Split the `total` passages of passages_tsv into `num_shards` contiguous files whose sizes differ by at most 1."""
    sizes = [total // num_shards + (1 if k < total % num_shards else 0) for k in range(num_shards)]
    paths = [shard_path(passages_tsv, k, num_shards) for k in range(num_shards)]
    rows = read_passages_tsv(passages_tsv)
    with contextlib.ExitStack() as stack:
        for path, size in zip(paths, sizes):
            f = stack.enter_context(atomic_write(path))
            f.write(PASSAGES_HEADER + "\n")
            for _ in range(size):
                f.write("\t".join(next(rows)) + "\n")
    return paths
