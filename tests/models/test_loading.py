"""load_encoder_pair accepts checkpoints, tower pairs, single HF dirs and registry names (dpr/models/loading.py)."""
from __future__ import annotations

import pytest

from dpr.models.encoder import EncoderSettings
from dpr.models.loading import load_encoder_pair
from dpr.utils.io import InputError
from tests.models.conftest import make_bert_dir


def test_checkpoint_file_and_pair_dir(tmp_path):
    ckpt = tmp_path / "dpr_biencoder.0.10"
    ckpt.write_bytes(b"state")
    make_bert_dir(tmp_path / "dpr_biencoder.0.10.question_encoder", EncoderSettings(pooling="mean"), seed=1)
    make_bert_dir(tmp_path / "dpr_biencoder.0.10.passage_encoder", EncoderSettings(pooling="mean"), seed=2)
    q, p, tok = load_encoder_pair(ckpt)
    assert q is not p and q.settings.pooling == "mean" and tok.convert_tokens_to_ids("我") > 4
    q_w, p_w = (e.model.embeddings.word_embeddings.weight for e in (q, p))
    assert not q_w.equal(p_w)  # the two towers, not one loaded twice

    pair = tmp_path / "pair"
    make_bert_dir(pair / "question_encoder", seed=1)
    make_bert_dir(pair / "passage_encoder", seed=2)
    q2, p2, _ = load_encoder_pair(pair)
    assert q2 is not p2 and q2.model.embeddings.word_embeddings.weight.equal(q_w)


def test_single_dir_is_shared_and_settings_override(tmp_path):
    path = make_bert_dir(tmp_path / "single", EncoderSettings(pooling="mean"))
    q, p, _ = load_encoder_pair(path)
    assert q is p and q.settings.pooling == "mean"
    q, _, _ = load_encoder_pair(path, EncoderSettings(pooling="cls"))
    assert q.settings.pooling == "cls"


def test_checkpoint_without_towers(tmp_path):
    ckpt = tmp_path / "dpr_biencoder.1.0"
    ckpt.write_bytes(b"state")
    with pytest.raises(InputError, match="dpr_biencoder.1.0.question_encoder"):
        load_encoder_pair(ckpt)


def test_unknown_names_fail_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="not a local directory.*--pretrained_model_cfg"):
        load_encoder_pair("no-such-org/no-such-model")
    with pytest.raises(OSError, match="no such directory"):
        load_encoder_pair("/no/such/model/dir")


def test_registry_name(e5_dir, monkeypatch):
    monkeypatch.setenv("DPR_CACHE_DIR", str(e5_dir.parent))
    q, p, tok = load_encoder_pair("multilingual-e5-small")
    assert q is p and q.settings.pooling == "mean" and q.settings.query_prefix == "query: "
    assert tok("query: 你好")["input_ids"][0] == 0
