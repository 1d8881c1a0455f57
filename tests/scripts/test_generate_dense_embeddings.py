import logging

import numpy as np
import pytest

import generate_dense_embeddings as gen
from dpr.data.shards import shard_range
from dpr.encode import encode_texts
from dpr.index.embeddings import load_shard, shard_paths
from dpr.models.encoder import Encoder
from tests.tiny_encoder import random_passages, save_tiny_biencoder, tiny_tokenizer, write_passages_tsv


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    model = save_tiny_biencoder(root / "model")
    passages = random_passages(23, seed=7)
    ctx = write_passages_tsv(root / "passages.tsv", passages)
    return model, ctx, passages


def run(model, ctx, out, *extra):
    return gen.main(["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(out),
                     "--batch_size", "4", "--block_size", "5", "--p_sequence_length", "40", *extra])


def test_shards_cover_the_file_in_order_with_passage_tower(setup, tmp_path):
    model, ctx, passages = setup
    for k in range(3):
        assert run(model, ctx, tmp_path / "emb", "--shard_id", str(k), "--num_shards", "3") == 0
    shards = [load_shard(tmp_path / f"emb_shard{k}.npy") for k in range(3)]
    assert [len(s.ids) for s in shards] == [8, 8, 7]
    assert [pid for s in shards for pid in s.ids] == [pid for pid, _ in passages]
    tower = Encoder.from_pretrained(model / "passage_encoder")
    expected = encode_texts(tower, tiny_tokenizer(), [t for _, t in passages], "passage", 40)
    np.testing.assert_allclose(np.concatenate([s.vectors for s in shards]), expected, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_rerun_skips_a_finished_shard_and_redoes_a_broken_one(setup, tmp_path, monkeypatch, caplog):
    model, ctx, _ = setup
    assert run(model, ctx, tmp_path / "emb", "--num_shards", "2") == 0
    npy, ids = shard_paths(tmp_path / "emb_shard0")
    before = npy.stat().st_mtime_ns

    def must_not_encode(*a, **k):
        raise AssertionError("a complete shard was encoded again")

    with monkeypatch.context() as m, caplog.at_level(logging.INFO):
        m.setattr(gen, "encode_stream", must_not_encode)
        assert run(model, ctx, tmp_path / "emb", "--num_shards", "2") == 0
    assert npy.stat().st_mtime_ns == before and "skipping" in caplog.text

    ids.write_text("".join(ids.read_text().splitlines(keepends=True)[:-1]))  # a shard left incomplete
    assert run(model, ctx, tmp_path / "emb", "--num_shards", "2") == 0
    assert len(load_shard(npy).ids) == 12


def test_save_fp16(setup, tmp_path):
    model, ctx, _ = setup
    assert run(model, ctx, tmp_path / "emb", "--save_fp16") == 0
    shard = load_shard(tmp_path / "emb_shard0.npy")
    assert shard.vectors.dtype == np.float16 and shard.vectors.shape == (23, 32)


def test_empty_shard_is_an_error_and_writes_nothing(setup, tmp_path, caplog):
    model, _, _ = setup
    ctx = write_passages_tsv(tmp_path / "two.tsv", [("a", "中国"), ("b", "北京")])
    assert run(model, ctx, tmp_path / "emb", "--shard_id", "2", "--num_shards", "3") == 2
    assert "two.tsv: shard 2 of 3 is empty: the file has 2 passages" in caplog.text
    assert not list(tmp_path.glob("emb*"))


def test_bad_collection_names_file_and_line(setup, tmp_path, caplog):
    model, _, _ = setup
    ctx = tmp_path / "bad.tsv"
    ctx.write_text("id\ttext\ttitle\na\t中国\t\nb\tno title column\n", encoding="utf-8")
    assert run(model, ctx, tmp_path / "emb") == 2
    assert "bad.tsv:3" in caplog.text
    assert not list(tmp_path.glob("emb*"))


def test_shard_range_is_balanced_and_complete():
    for total in (0, 1, 7, 100):
        for n in (1, 3, 8):
            ranges = [shard_range(total, k, n) for k in range(n)]
            assert ranges[0][0] == 0 and ranges[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


def test_shard_id_out_of_range_is_rejected(setup):
    model, ctx, _ = setup
    with pytest.raises(SystemExit):
        run(model, ctx, "x", "--shard_id", "3", "--num_shards", "3")
