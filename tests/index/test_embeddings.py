import pickle

import numpy as np
import pytest

from dpr.index.embeddings import expand_shards, load_shard, open_shards, save_shard, shard_is_complete, shard_paths
from dpr.utils.io import InputError


def test_roundtrip_fp32_and_fp16(tmp_path):
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_shard(tmp_path / "a_shard0", ["x", "y", "z"], vecs)
    save_shard(tmp_path / "b_shard0", ["x", "y", "z"], vecs, fp16=True)
    a, b = load_shard(tmp_path / "a_shard0.npy"), load_shard(tmp_path / "b_shard0")
    assert a.ids == ["x", "y", "z"] and a.vectors.dtype == np.float32 and b.vectors.dtype == np.float16
    np.testing.assert_array_equal(a.vectors, vecs)
    np.testing.assert_array_equal(b.vectors.astype(np.float32), vecs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_shard0.ids.txt", "a_shard0.npy", "b_shard0.ids.txt",
                                                          "b_shard0.npy"]  # no temp files left


def test_shard_is_complete_checks_count_and_dim(tmp_path):
    prefix = tmp_path / "e_shard0"
    assert not shard_is_complete(prefix, 3, 4)
    save_shard(prefix, ["x", "y", "z"], np.zeros((3, 4), np.float32))
    assert shard_is_complete(prefix, 3, 4)
    assert not shard_is_complete(prefix, 4, 4) and not shard_is_complete(prefix, 3, 8)
    shard_paths(prefix)[1].write_text("x\ny\n")
    assert not shard_is_complete(prefix, 3, 4)


def test_natural_order_of_shards(tmp_path):
    for k in (10, 2, 1):
        save_shard(tmp_path / f"e_shard{k}", [f"id{k}"], np.zeros((1, 2), np.float32))
    assert [p.name for p in expand_shards(str(tmp_path / "e_shard*"))] == ["e_shard1.npy", "e_shard2.npy",
                                                                           "e_shard10.npy"]


def test_id_count_mismatch_names_the_file(tmp_path):
    save_shard(tmp_path / "e_shard0", ["x", "y"], np.zeros((2, 4), np.float32))
    shard_paths(tmp_path / "e_shard0")[1].write_text("x\n")
    with pytest.raises(InputError, match=r"e_shard0.ids.txt: 1 ids but e_shard0.npy has 2 vectors"):
        load_shard(tmp_path / "e_shard0.npy")


def test_missing_ids_file(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="ids file missing"):
        load_shard(tmp_path / "e.npy")


def test_empty_shard_is_an_error(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 4), np.float32))
    (tmp_path / "e.ids.txt").write_text("")
    with pytest.raises(InputError, match=r"e.npy: empty shard"):
        load_shard(tmp_path / "e.npy")


def test_pickle_and_wrong_shape_are_rejected(tmp_path):
    with open(tmp_path / "old.npy", "wb") as f:
        pickle.dump([("id", np.zeros(4))], f)
    with pytest.raises(InputError, match="old.npy: not a .npy array"):
        load_shard(tmp_path / "old.npy")
    np.save(tmp_path / "flat.npy", np.zeros(4, np.float32))
    with pytest.raises(InputError, match="2-D"):
        load_shard(tmp_path / "flat.npy")


def test_dimension_mismatch_between_shards(tmp_path):
    save_shard(tmp_path / "e_shard0", ["a"], np.zeros((1, 4), np.float32))
    save_shard(tmp_path / "e_shard1", ["b"], np.zeros((1, 8), np.float32))
    with pytest.raises(InputError, match="e_shard1.npy: dimension 8 differs"):
        open_shards(str(tmp_path / "e_shard*.npy"))


def test_duplicate_ids_across_shards(tmp_path):
    save_shard(tmp_path / "e_shard0", ["a"], np.zeros((1, 4), np.float32))
    save_shard(tmp_path / "e_shard1", ["a"], np.zeros((1, 4), np.float32))
    with pytest.raises(InputError, match="'a' appears in more than one"):
        open_shards(str(tmp_path / "e_shard*.npy"))


def test_no_match(tmp_path):
    with pytest.raises(InputError, match="no embedding files match"):
        open_shards(str(tmp_path / "nothing*.npy"))


def test_save_rejects_bad_ids(tmp_path):
    with pytest.raises(ValueError):
        save_shard(tmp_path / "e", ["a\nb"], np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError):
        save_shard(tmp_path / "e", ["a", "b"], np.zeros((1, 2), np.float32))
