import numpy as np
import pytest

from dpr.data.shards import shard_range
from dpr.training.data import split_for_rank


def test_shard_range_is_contiguous_larger_first_and_covers_everything():
    assert [shard_range(10, k, 4) for k in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert [shard_range(2, k, 3) for k in range(3)] == [(0, 1), (1, 2), (2, 2)]  # more shards than rows
    for total in range(0, 30):
        for n in range(1, 7):
            parts = [shard_range(total, k, n) for k in range(n)]
            assert parts[0][0] == 0 and parts[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [b - a for a, b in parts]
            assert sizes == sorted(sizes, reverse=True) and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        shard_range(10, 4, 4)


def test_the_training_batch_splits_over_ranks_by_the_same_rule():
    batch = np.arange(100, 107)
    assert [split_for_rank(batch, r, 3).tolist() for r in range(3)] == [
        batch[a:b].tolist() for a, b in (shard_range(7, r, 3) for r in range(3))]
