"""Loading never executes code from a file: training states go through torch.load(weights_only=True), towers are
safetensors + JSON, vectors are .npy without pickles. Each crafted payload would create a marker file if run."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import dense_retriever
import generate_dense_embeddings as gen
import train_dense_encoder
from dpr.index.embeddings import load_shard
from dpr.retrieval.query_cache import load_question_vectors
from dpr.training.checkpoint import latest_checkpoint
from dpr.utils.io import InputError
from tests.faults.common import save_tiny_model, write_dpr_train
from tests.tiny_encoder import random_passages, write_passages_tsv


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file appears only if the pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path, Path]:
    """(output dir, dpr_biencoder.0.5 whose state is a pickle payload, marker) with genuine towers beside it."""
    model = save_tiny_model(tmp_path / "model")
    out, marker = tmp_path / "out", tmp_path / "PWNED"
    out.mkdir()
    state = out / "dpr_biencoder.0.5"
    torch.save({"epoch": 0, "iteration": 5, "optimizer": Payload(marker)}, state)
    for tower in ("question_encoder", "passage_encoder"):
        shutil.copytree(model, f"{state}.{tower}")
    torch.load(state, weights_only=False)  # the payload is real: unrestricted unpickling runs it
    assert marker.exists()
    marker.unlink()
    return out, state, marker


def _train_args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    train = write_dpr_train(tmp_path / "train.json", 4)
    return ["--pretrained_model_cfg", str(tmp_path / "model"), "--train_file", str(train), "--output_dir", str(out),
            "--num_workers", "0", "--no_progress", *extra]


def test_resume_refuses_a_pickled_state(tmp_path, crafted):
    out, state, marker = crafted
    assert latest_checkpoint(out) == state
    with pytest.raises(SystemExit, match=r"dpr_biencoder.0.5: not a training checkpoint: .*Weights only load failed"):
        train_dense_encoder.main(_train_args(tmp_path, out, "--resume"))
    assert not marker.exists()


def test_model_file_takes_only_the_towers_of_a_checkpoint(tmp_path, crafted):
    """--model_file STATE gives starting weights (a new run): the towers are read, the state file never is."""
    out, state, marker = crafted
    train_dense_encoder.main(_train_args(tmp_path, tmp_path / "out2", "--model_file", str(state)))
    assert latest_checkpoint(tmp_path / "out2") is not None  # it trained
    assert not marker.exists()


def test_inference_reads_only_the_towers_of_a_checkpoint(tmp_path, crafted):
    """generate_dense_embeddings / dense_retriever --model_file STATE never open the state file itself."""
    out, state, marker = crafted
    ctx = write_passages_tsv(tmp_path / "p.tsv", random_passages(4))
    assert gen.main(["--model_file", str(state), "--ctx_file", str(ctx), "--out_file", str(tmp_path / "emb")]) == 0
    assert not marker.exists()


def test_pickled_tower_weights_are_refused(tmp_path, capsys):
    """A tower dir whose weights are a pickle (pytorch_model.bin) instead of safetensors: refused, not run."""
    tower, marker = save_tiny_model(tmp_path / "tower"), tmp_path / "PWNED"
    (tower / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": Payload(marker)}, tower / "pytorch_model.bin")
    ctx = write_passages_tsv(tmp_path / "p.tsv", random_passages(4))
    assert gen.main(["--model_file", str(tower), "--ctx_file", str(ctx), "--out_file", str(tmp_path / "emb")]) == 2
    assert f"{tower}: refused: its pickled weights file holds more than tensors" in capsys.readouterr().err
    assert not marker.exists()
    assert not list(tmp_path.glob("emb*"))


def test_pickled_npy_embeddings_and_question_vectors_are_refused(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    vectors = np.empty((1, 1), dtype=object)
    vectors[0, 0] = Payload(marker)
    np.save(tmp_path / "emb_shard0.npy", vectors, allow_pickle=True)
    (tmp_path / "emb_shard0.ids.txt").write_text("p1\n")
    with pytest.raises(InputError, match="emb_shard0.npy: not a .npy array file .*never pickles"):
        load_shard(tmp_path / "emb_shard0.npy")
    np.save(tmp_path / "q.npy", vectors, allow_pickle=True)
    (tmp_path / "q.npy.qids.txt").write_text("q1\n")
    with pytest.raises(InputError, match="q.npy: not a .npy array file"):
        load_question_vectors(tmp_path / "q.npy", ["q1"])
    qa = tmp_path / "q.tsv"
    qa.write_text("q1\t北京\n", encoding="utf-8")
    assert dense_retriever.main(["--qa_file", str(qa), "--q_encoding_path", str(tmp_path / "q.npy"),
                                 "--encoded_ctx_file", str(tmp_path / "emb_shard*.npy"),
                                 "--out_file", str(tmp_path / "res.json")]) == 2
    assert "not a .npy array file" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "res.json").exists()
