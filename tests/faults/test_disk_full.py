"""Unwritable output directories fail before any work; a disk that fills up mid-write (OSError ENOSPC raised from
a write) leaves no corrupt or half-written file, only complete files from earlier stages and no temp files."""
from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import dense_retriever
import generate_dense_embeddings as gen
import train_dense_encoder
from dpr.data import cmrc, preprocess
from dpr.data.formats import DPRJsonWriter, PassagesWriter, read_passages_tsv
from dpr.data.preprocess import Options, run
from dpr.retrieval import batch, passage_shards, results
from dpr.training import checkpoint
from dpr.training.checkpoint import latest_checkpoint
from dpr.utils.io import InputError
from tests.eval.test_evaluate_script import load_script
from tests.faults.common import save_tiny_model, temp_leftovers, visible_files, write_dpr_train
from tests.faults.test_bad_inputs import PASSAGES, _release
from tests.tiny_encoder import random_passages, save_tiny_biencoder, write_passages_tsv


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the output directory was checked")


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A directory path that can never be created (it lies under a regular file), for root too."""
    (tmp_path / "a_file").write_text("x")
    return tmp_path / "a_file" / "out"


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _fail_after(n: int, original):
    calls = {"n": 0}

    def write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            _enospc()
        return original(*args, **kwargs)
    return write


# ----- unwritable output directory: a clear error at the start -----

def test_preprocess_unwritable(tmp_path, blocked, monkeypatch):
    src = _release(tmp_path / "in", PASSAGES)
    monkeypatch.setattr(preprocess, "read_release_questions", _no_work)
    with pytest.raises(InputError, match=f"{blocked}: output directory is not writable"):
        run(Options(src, blocked, bm25=False))


def test_training_unwritable(tmp_path, blocked, monkeypatch):
    monkeypatch.setattr(train_dense_encoder, "load_models", _no_work)
    with pytest.raises(SystemExit, match=f"{blocked}: output directory is not writable"):
        train_dense_encoder.main(["--train_file", str(write_dpr_train(tmp_path / "t.json", 4)),
                                  "--output_dir", str(blocked)])


def test_encoding_unwritable(tmp_path, blocked, monkeypatch, capsys):
    monkeypatch.setattr(passage_shards, "load_towers", _no_work)
    monkeypatch.setattr(passage_shards, "count_passages", _no_work)
    assert gen.main(["--ctx_file", "p.tsv", "--out_file", str(blocked / "emb")]) == 2
    assert f"{blocked}: output directory is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [["--out_file", "{d}/res.json"], ["--out_file", "{d}/"],
                                  ["--encode_q_and_save", "--q_encoding_path", "{d}/q.npy"],
                                  ["--mine_hard_negatives", "{d}/mined.json", "--ctx_file", "p.tsv"]])
def test_retrieval_unwritable(blocked, monkeypatch, capsys, mode):
    monkeypatch.setattr(batch, "load_questions", _no_work)
    monkeypatch.setattr(batch, "load_towers", _no_work)
    argv = ["--qa_file", "q.tsv", "--encoded_ctx_file", "e*.npy"] + [a.format(d=blocked) for a in mode]
    assert dense_retriever.main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{blocked}: output directory is not writable" in errors[0]


def test_bm25_and_cmrc_builder_unwritable(tmp_path, blocked, monkeypatch):
    bm25 = load_script("bm25_retriever")
    monkeypatch.setattr(bm25, "read_questions", _no_work)
    with pytest.raises(SystemExit, match=f"{blocked}: output directory is not writable"):
        bm25.main(["--qa_file", "q", "--ctx_file", "c", "--out_file", str(blocked / "bm25.json")])
    for name in ("cmrc2018_train.json", "cmrc2018_dev.json", "cmrc2018_trial.json"):
        (tmp_path / name).write_text("{}")
    monkeypatch.setattr(cmrc, "convert_split", _no_work)
    with pytest.raises(InputError, match=f"{blocked}: output directory is not writable"):
        cmrc.build(tmp_path, blocked)


# ----- the disk fills up in the middle of a write -----

def test_preprocess_disk_full_while_writing_passages(tmp_path, monkeypatch):
    src, out = _release(tmp_path / "in", PASSAGES), tmp_path / "out"
    monkeypatch.setattr(PassagesWriter, "write", _fail_after(3, PassagesWriter.write))
    with pytest.raises(OSError, match="No space left"):
        run(Options(src, out, bm25=False))
    assert list(out.iterdir()) == []


def test_preprocess_disk_full_while_writing_train_file(tmp_path, monkeypatch):
    src, out = _release(tmp_path / "in", PASSAGES), tmp_path / "out"
    monkeypatch.setattr(DPRJsonWriter, "write", _enospc)
    with pytest.raises(OSError, match="No space left"):
        run(Options(src, out, bm25=False))
    # what was finished before is complete; the train file is absent, not truncated
    assert [p.name for p in visible_files(out)] == ["passages.tsv", "retrieval_train_data"]
    assert len(list(read_passages_tsv(out / "passages.tsv"))) == len(PASSAGES)
    assert temp_leftovers(out) == []


def test_training_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch):
    model = save_tiny_model(tmp_path / "model")
    train, out = write_dpr_train(tmp_path / "train.json", 12), tmp_path / "out"
    monkeypatch.setattr(checkpoint.torch, "save", _fail_after(1, checkpoint.torch.save))
    with pytest.raises(OSError, match="No space left"):
        train_dense_encoder.main(["--pretrained_model_cfg", str(model), "--train_file", str(train), "--output_dir",
                                  str(out), "--batch_size", "4", "--save_every_steps", "1", "--num_workers", "0",
                                  "--no_progress", "--q_sequence_length", "8", "--p_sequence_length", "16"])
    assert latest_checkpoint(out) == out / "dpr_biencoder.0.1"  # the failed .0.2 is not taken for a checkpoint
    assert not (out / "dpr_biencoder.0.2").exists()
    assert temp_leftovers(out) == []
    checkpoint.load_state(out / "dpr_biencoder.0.1")


def test_encoding_disk_full_while_writing_a_shard(tmp_path, monkeypatch):
    model = save_tiny_biencoder(tmp_path / "model")
    ctx = write_passages_tsv(tmp_path / "p.tsv", random_passages(10))
    monkeypatch.setattr(passage_shards, "write_ids", _enospc)
    with pytest.raises(OSError, match="No space left"):
        gen.main(["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(tmp_path / "e" / "emb")])
    assert list((tmp_path / "e").iterdir()) == []  # neither the vectors nor the ids, nor temp files


def test_retrieval_disk_full_while_writing_the_rerank_file(tmp_path, monkeypatch):
    model = save_tiny_biencoder(tmp_path / "model")
    passages = random_passages(10)
    ctx = write_passages_tsv(tmp_path / "p.tsv", passages)
    assert gen.main(["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(tmp_path / "emb")]) == 0
    qa = tmp_path / "q.tsv"
    qa.write_text("q1\t北京\nq2\t中国\n", encoding="utf-8")
    out = tmp_path / "res"
    # the rerank writer's second line fills the disk (the first is already in its file)
    monkeypatch.setattr(results, "json", SimpleNamespace(dumps=_fail_after(1, json.dumps)))
    with pytest.raises(OSError, match="No space left"):
        dense_retriever.main(["--model_file", str(model), "--qa_file", str(qa), "--ctx_file", str(ctx),
                              "--encoded_ctx_file", str(tmp_path / "emb_shard*.npy"),
                              "--out_file", str(out / "res.json")])
    assert [p.name for p in visible_files(out)] == ["res.json"]  # complete; no rerank file, no temp files
    assert list(out.iterdir()) == [out / "res.json"]
    assert set(json.loads((out / "res.json").read_text())) == {"q1", "q2"}
