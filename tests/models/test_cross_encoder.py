"""The cross-encoder model: pair tokenizing, fp32 head, atomic save/load, sentence-transformers both ways."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from dpr.models.cross_encoder import (
    RERANKER_FILE,
    CrossEncoder,
    CrossEncoderSettings,
    load_cross_encoder,
    new_cross_encoder,
    pair_ids,
    pair_logits,
    read_settings,
    save_cross_encoder,
    tokenize_pairs,
)
from dpr.models.encoder import Encoder
from dpr.utils.io import InputError
from tests.tiny_encoder import CHARS, VOCAB, bert_tokenizer, tiny_bert, tiny_tokenizer

SETTINGS = CrossEncoderSettings(max_length=48, q_max_length=8)
QUESTIONS = ["的一是在不了", "有和人这中大", "我以要他时来用们"]  # within q_max_length: no cut
PASSAGES = ["".join(CHARS[0::7][:20]), "".join(CHARS[3::5][:12]), "".join(CHARS[1::3][:30])]


@pytest.fixture
def encoder_dir(tmp_path) -> Path:
    """A tiny random BERT saved as the project saves an encoder (no classification head)."""
    Encoder(tiny_bert(3)).save_pretrained(tmp_path / "enc", tiny_tokenizer())
    return tmp_path / "enc"


@pytest.fixture
def ce(encoder_dir) -> CrossEncoder:
    torch.manual_seed(0)
    model = new_cross_encoder(str(encoder_dir), SETTINGS)
    with torch.no_grad():  # a new head scores every pair near 0: spread them so that orders mean something
        model.model.classifier.weight *= 100
    model.model.eval()
    return model


def logits(model: CrossEncoder, questions=QUESTIONS, passages=PASSAGES) -> torch.Tensor:
    with torch.no_grad():
        return pair_logits(model.model, tokenize_pairs(model, questions, passages))


def test_new_cross_encoder_has_one_fp32_logit_per_pair(ce):
    out = logits(ce)
    assert out.shape == (3,) and out.dtype == torch.float32
    assert ce.model.config.num_labels == 1
    assert min(abs(a - b) for a, b in [(out[0], out[1]), (out[1], out[2]), (out[0], out[2])]) > 1e-3


def test_question_cut_at_q_max_length_and_pair_at_max_length(ce):
    long_q, long_p = "的" * 50, "是" * 200
    ids, types = pair_ids(ce.tokenizer, ce.settings, [long_q, "一"], [long_p, "是是"])
    the, shi = VOCAB["的"], VOCAB["是"]
    assert len(ids[0]) == SETTINGS.max_length
    assert ids[0].count(the) == SETTINGS.q_max_length  # the question kept its first q_max_length tokens
    assert ids[0].count(shi) == SETTINGS.max_length - SETTINGS.q_max_length - 3  # the passage filled the rest
    assert ids[1] == [VOCAB["[CLS]"], VOCAB["一"], VOCAB["[SEP]"], shi, shi, VOCAB["[SEP]"]]
    assert types is not None and types[1] == [0, 0, 0, 1, 1, 1]  # token type ids kept for pairs


def test_lowercasing_follows_the_settings(tmp_path):
    tok = bert_tokenizer({**VOCAB, "a": len(VOCAB)}, do_lower_case=False, tokenize_chinese_chars=True)
    upper = pair_ids(tok, SETTINGS, ["A"], ["的"])[0][0]
    lower = pair_ids(tok, CrossEncoderSettings(48, 8, do_lower_case=True), ["A"], ["的"])[0][0]
    assert VOCAB["[UNK]"] in upper and len(VOCAB) in lower


def test_head_stays_fp32_under_bf16_autocast(ce):
    batch = tokenize_pairs(ce, QUESTIONS, PASSAGES)
    with torch.no_grad():
        full = pair_logits(ce.model, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = pair_logits(ce.model, batch)
            head_out = ce.model.classifier(torch.randn(2, 32))
    assert head_out.dtype == torch.float32
    assert half.dtype == torch.float32
    assert torch.allclose(full, half, atol=0.05)


def test_save_then_load_scores_the_same(ce, tmp_path):
    save_cross_encoder(ce, tmp_path / "rr", extra={"run": "x"})
    out = tmp_path / "rr"
    assert not (out / "modules.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["sentence_transformers"] == {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == SETTINGS.max_length
    info = json.loads((out / RERANKER_FILE).read_text())
    assert info["settings"] == {"max_length": 48, "q_max_length": 8, "do_lower_case": False}
    assert info["run"] == "x" and len(info["fingerprint"]) == 64
    back = load_cross_encoder(out)
    assert back.settings == SETTINGS
    assert torch.allclose(logits(back), logits(ce), atol=1e-6)


def test_the_fingerprint_follows_the_weights(ce, tmp_path):
    save_cross_encoder(ce, tmp_path / "a")
    with torch.no_grad():
        ce.model.classifier.bias += 1
    save_cross_encoder(ce, tmp_path / "b")
    save_cross_encoder(ce, tmp_path / "c")
    fp = {n: json.loads((tmp_path / n / RERANKER_FILE).read_text())["fingerprint"] for n in "abc"}
    assert fp["a"] != fp["b"] and fp["b"] == fp["c"]


def test_a_failed_save_leaves_the_old_directory(ce, tmp_path, monkeypatch):
    out = tmp_path / "rr"
    save_cross_encoder(ce, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with torch.no_grad():
        ce.model.classifier.bias += 1

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ce.tokenizer, "save_pretrained", boom)
    with pytest.raises(OSError):
        save_cross_encoder(ce, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "rr"]  # no temp directory left


def test_sentence_transformers_loads_ours_with_the_same_order_and_sigmoid_scores(ce, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    save_cross_encoder(ce, tmp_path / "rr")
    theirs = st.CrossEncoder(str(tmp_path / "rr"), device="cpu")
    predicted = torch.as_tensor(theirs.predict(list(zip(QUESTIONS, PASSAGES))), dtype=torch.float32)
    ours = logits(ce)
    assert torch.allclose(predicted, torch.sigmoid(ours), atol=1e-5)
    assert predicted.argsort().tolist() == ours.argsort().tolist()


def test_a_cross_encoder_saved_by_sentence_transformers_loads_here(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=128, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "plain")
    tiny_tokenizer().save_pretrained(tmp_path / "plain")
    theirs = st.CrossEncoder(str(tmp_path / "plain"), device="cpu", max_length=64)
    theirs.save(str(tmp_path / "st"))
    ours = load_cross_encoder(tmp_path / "st")
    assert ours.settings.max_length == 64 and not ours.settings.do_lower_case
    predicted = torch.as_tensor(theirs.predict(list(zip(QUESTIONS, PASSAGES))), dtype=torch.float32)
    assert torch.allclose(torch.sigmoid(logits(ours)), predicted, atol=1e-5)


def test_a_directory_that_is_not_a_reranker_is_one_clear_error(tmp_path, encoder_dir):
    with pytest.raises(InputError, match="modules"):  # a sentence-transformers bi-encoder
        load_cross_encoder(encoder_dir)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=37, num_labels=3)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "three")
    with pytest.raises(InputError, match=r"config\.json: not a reranker: 3 labels"):
        load_cross_encoder(tmp_path / "three")
    with pytest.raises(InputError, match="no such reranker directory"):
        load_cross_encoder(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / RERANKER_FILE).write_text('{"settings": {"max_length": 2}}')
    with pytest.raises(InputError, match="bad reranker settings"):
        read_settings(tmp_path / "bad")
