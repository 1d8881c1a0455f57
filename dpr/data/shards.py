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


def shard_range(total: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """Rows [start, stop) of shard k of n over `total` rows: contiguous, sizes differ by at most one, the larger
    first. The one splitting rule: preprocessing's shard files and generate_dense_embeddings' --shard_id use it."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard {shard_id} of {num_shards}")
    size, extra = divmod(total, num_shards)
    start = shard_id * size + min(shard_id, extra)
    return start, start + size + (shard_id < extra)


def write_shards(passages_tsv: str | os.PathLike, num_shards: int, total: int) -> list[Path]:
    """Split the `total` passages of passages_tsv into `num_shards` contiguous files (see `shard_range`)."""
    sizes = [b - a for a, b in (shard_range(total, k, num_shards) for k in range(num_shards))]
    paths = [shard_path(passages_tsv, k, num_shards) for k in range(num_shards)]
    rows = read_passages_tsv(passages_tsv)
    with contextlib.ExitStack() as stack:
        for path, size in zip(paths, sizes):
            f = stack.enter_context(atomic_write(path))
            f.write(PASSAGES_HEADER + "\n")
            for _ in range(size):
                f.write("\t".join(next(rows)) + "\n")
    return paths
