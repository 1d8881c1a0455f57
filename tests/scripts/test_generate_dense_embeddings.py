import logging
import shutil

import numpy as np
import pytest

import generate_dense_embeddings as gen
from dpr.data.shards import shard_range
from dpr.encode import encode_texts
from dpr.index.embeddings import load_shard, shard_paths
from dpr.index.records import read_record
from dpr.models.encoder import Encoder, EncoderSettings
from dpr.retrieval import passage_shards
from tests.tiny_encoder import random_passages, save_tiny_biencoder, tiny_bert, tiny_tokenizer, write_passages_tsv


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    model = save_tiny_biencoder(root / "model")
    passages = random_passages(23, seed=7)
    ctx = write_passages_tsv(root / "passages.tsv", passages)
    return model, ctx, passages


def run(model, ctx, out, *extra):
    return gen.main(["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(out),
                     "--batch_size", "4", "--block_size", "5", "--p_sequence_length", "40", "--precision", "fp32", *extra])


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
        m.setattr(passage_shards, "encode_stream", must_not_encode)
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


def test_empty_shard_is_an_error_and_writes_nothing(setup, tmp_path, capsys):
    model, _, _ = setup
    ctx = write_passages_tsv(tmp_path / "two.tsv", [("a", "中国"), ("b", "北京")])
    assert run(model, ctx, tmp_path / "emb", "--shard_id", "2", "--num_shards", "3") == 2
    assert "two.tsv: shard 2 of 3 is empty: the file has 2 passages" in capsys.readouterr().err
    assert not list(tmp_path.glob("emb*"))


def test_bad_collection_names_file_and_line(setup, tmp_path, capsys):
    model, _, _ = setup
    ctx = tmp_path / "bad.tsv"
    ctx.write_text("id\ttext\ttitle\na\t中国\t\nb\tno title column\n", encoding="utf-8")
    assert run(model, ctx, tmp_path / "emb") == 2
    assert "bad.tsv:3" in capsys.readouterr().err
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


def test_the_encode_config_built_in_python_applies_the_flags_rules():
    # run_shard(EncodeConfig(...)) skipped argparse's positive_int: batch_size / block_size 0 or -1 were accepted
    for field, value in (("batch_size", 0), ("block_size", -1), ("num_threads", 0), ("num_shards", 0)):
        with pytest.raises(ValueError, match=f"^--{field}: must be a positive integer, got {value}$"):
            passage_shards.EncodeConfig(ctx_file="p.tsv", out_file="o", **{field: value})
    with pytest.raises(ValueError, match="^--pooling: invalid choice 'first'"):
        passage_shards.EncodeConfig(ctx_file="p.tsv", out_file="o", pooling="first")


def test_precision_auto_follows_the_policy_and_fp32_forces_fp32(setup, tmp_path, monkeypatch):
    """Default --precision auto takes bf16 on a fast-bf16 CPU; --precision fp32 (what an empty PRECISION= passes) is
    exactly fp32."""
    from dpr.utils import precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)  # auto -> bf16 autocast on this CPU
    model, ctx, passages = setup
    common = ["--model_file", str(model), "--ctx_file", str(ctx), "--batch_size", "4", "--p_sequence_length", "40"]
    assert gen.main(common + ["--out_file", str(tmp_path / "auto")]) == 0
    assert gen.main(common + ["--out_file", str(tmp_path / "fp32"), "--precision", "fp32"]) == 0
    tower = Encoder.from_pretrained(model / "passage_encoder")
    expected = encode_texts(tower, tiny_tokenizer(), [t for _, t in passages], "passage", 40)
    fp32 = load_shard(tmp_path / "fp32_shard0.npy").vectors
    auto = load_shard(tmp_path / "auto_shard0.npy").vectors
    np.testing.assert_allclose(fp32, expected, atol=1e-5)
    fp32_err, auto_err = np.abs(fp32 - expected).max(), np.abs(auto - expected).max()
    assert auto_err > max(1e-6, 10 * fp32_err)  # bf16 autocast really ran for auto, not for fp32
    np.testing.assert_allclose(auto, expected, atol=5e-2)


# ----- records: a shard is reused only when it was made exactly as this run would make it -----

def other_model(root):
    """A bi-encoder with other weights than save_tiny_biencoder's (same tokenizer and settings)."""
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="问", passage_prefix="文")
    for seed, name in ((5, "question_encoder"), (6, "passage_encoder")):
        Encoder(tiny_bert(seed), settings).save_pretrained(root / name, tiny_tokenizer())
    return root


def test_a_second_model_replaces_the_first_models_vectors(setup, tmp_path, caplog):
    model_a, ctx, _ = setup
    model_b = other_model(tmp_path / "b")
    assert run(model_a, ctx, tmp_path / "emb") == 0
    a = np.array(load_shard(tmp_path / "emb_shard0.npy").vectors)
    with caplog.at_level(logging.INFO):
        assert run(model_b, ctx, tmp_path / "emb") == 0
    assert "record differs in model" in caplog.text
    assert run(model_b, ctx, tmp_path / "fresh") == 0
    b, fresh = load_shard(tmp_path / "emb_shard0.npy").vectors, load_shard(tmp_path / "fresh_shard0.npy").vectors
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(b, fresh)
    assert read_record(tmp_path / "emb_shard0.npy")["model"] == read_record(tmp_path / "fresh_shard0.npy")["model"]


def test_an_unchanged_shard_is_skipped_before_the_model_is_loaded(setup, tmp_path, monkeypatch):
    model, ctx, _ = setup
    assert run(model, ctx, tmp_path / "emb") == 0
    monkeypatch.setattr(passage_shards, "load_passage_encoder", lambda *a: pytest.fail("the model was loaded"))
    assert run(model, ctx, tmp_path / "emb") == 0


@pytest.mark.parametrize("change", ["--pooling cls", "--do_lower_case", "--p_sequence_length 20", "--save_fp16",
                                    "passage text", "--overwrite"])
def test_any_change_in_what_makes_a_shard_re_encodes_it(setup, tmp_path, monkeypatch, change):
    model, ctx, passages = setup
    local = tmp_path / "passages.tsv"
    local.write_bytes(ctx.read_bytes())
    assert run(model, local, tmp_path / "emb") == 0
    extra = change.split() if change.startswith("--") else []
    if change == "passage text":  # one character of one passage, same size
        text = local.read_text(encoding="utf-8")
        i = text.index(passages[11][1])
        local.write_text(text[:i] + ("的" if text[i] != "的" else "一") + text[i + 1:], encoding="utf-8")
    encoded = []
    real = passage_shards.encode_stream
    monkeypatch.setattr(passage_shards, "encode_stream", lambda *a, **k: (encoded.append(1), (yield from real(*a, **k))))
    assert run(model, local, tmp_path / "emb", *extra) == 0
    assert encoded, f"{change}: the shard was not re-encoded"
    if change != "--overwrite":
        encoded.clear()
        assert run(model, local, tmp_path / "emb", *extra) == 0
        assert not encoded  # made exactly so now: skipped


def test_records_do_not_depend_on_paths(setup, tmp_path, monkeypatch):
    model, ctx, _ = setup
    assert run(model, ctx, tmp_path / "emb") == 0
    moved_model, moved_ctx = tmp_path / "elsewhere" / "model", tmp_path / "elsewhere" / "p.tsv"
    shutil.copytree(model, moved_model)
    moved_ctx.write_bytes(ctx.read_bytes())
    monkeypatch.setattr(passage_shards, "load_passage_encoder", lambda *a: pytest.fail("the model was loaded"))
    assert run(moved_model, moved_ctx, tmp_path / "emb") == 0


def test_a_worker_parses_only_its_own_rows(setup, tmp_path, capsys):
    model, _, _ = setup
    rows = [("a", "中国"), ("b", "北京"), ("c", "大学"), ("d", "人民")]
    ctx = write_passages_tsv(tmp_path / "p.tsv", rows)
    text = ctx.read_text(encoding="utf-8").replace("b\t北京\t\n", "b\tno title column\n")
    ctx.write_text(text, encoding="utf-8")
    assert run(model, ctx, tmp_path / "emb", "--shard_id", "1", "--num_shards", "2") == 0
    assert load_shard(tmp_path / "emb_shard1.npy").ids == ["c", "d"]
    assert run(model, ctx, tmp_path / "emb", "--shard_id", "0", "--num_shards", "2") == 2
    assert "p.tsv:3: expected 3 tab-separated columns" in capsys.readouterr().err


def test_q_sequence_length_says_it_has_no_effect(capsys):
    with pytest.raises(SystemExit):
        gen.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--q_sequence_length Q_SEQUENCE_LENGTH accepted for compatibility, no effect" in help_text


def test_a_same_size_edit_anywhere_in_the_source_re_encodes(setup, tmp_path, monkeypatch):
    """The whole file is hashed: an edit between the 17 blocks of 64 KiB a sampled hash would read is seen too."""
    model, _, _ = setup
    ctx = tmp_path / "big.tsv"
    ctx.write_text("id\ttext\ttitle\n" + "".join(f"p{i}\t中国\t{'a' * 80_000}\n" for i in range(20)), "utf-8")
    assert run(model, ctx, tmp_path / "emb") == 0
    data = bytearray(ctx.read_bytes())
    size, block = len(data), 1 << 16
    sampled = [max(0, min(size - block, size * i // 16)) for i in range(17)]
    offset = next(o for o in range(size) if data[o] == ord("a") and not any(s <= o < s + block for s in sampled))
    data[offset] = ord("b")
    ctx.write_bytes(bytes(data))
    encoded = []
    real = passage_shards.encode_stream
    monkeypatch.setattr(passage_shards, "encode_stream", lambda *a, **k: (encoded.append(1), (yield from real(*a, **k))))
    assert run(model, ctx, tmp_path / "emb") == 0
    assert encoded and read_record(tmp_path / "emb_shard0.npy")["rows"]["total"] == 20
