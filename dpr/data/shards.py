"""The one rule for cutting N rows into contiguous parts: encoding shards of passages.tsv and the ranks' parts of a
training batch."""
from __future__ import annotations


def shard_range(total: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """Rows [start, stop) of shard k of n over `total` rows: contiguous, sizes differ by at most one, the larger
    first. generate_dense_embeddings' --shard_id and the training batch's split over ranks use it."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard {shard_id} of {num_shards}")
    size, extra = divmod(total, num_shards)
    start = shard_id * size + min(shard_id, extra)
    return start, start + size + (shard_id < extra)
