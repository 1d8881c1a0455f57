"""Encoder settings, pooling, save/load round trips and sentence-transformers files (dpr/models/encoder.py)."""
from __future__ import annotations

import json

import pytest
import torch

from dpr.models.encoder import SETTINGS_FILE, Encoder, EncoderSettings, load_tokenizer, pool
from dpr.models.tokens import tokenize
from dpr.utils.io import InputError
from tests.models.conftest import make_bert_dir


def test_prepare_prefixes_and_lowercase():
    s = EncoderSettings(query_prefix="query: ", passage_prefix="passage: ", lowercase=True)
    assert s.prepare(["ABC 我们"], "query") == ["query: abc 我们"]
    assert s.prepare(["X"], "passage") == ["passage: x"]
    assert EncoderSettings().prepare(["Keep"], "query") == ["Keep"]
    # the prefix is lowercased too, as sentence-transformers' do_lower_case does with its prompt
    assert EncoderSettings(query_prefix="Q: ", lowercase=True).prepare(["A"], "query") == ["q: a"]
    with pytest.raises(ValueError, match="pooling"):
        EncoderSettings(pooling="weightedmean")


def test_settings_round_trip_and_bad_file(tmp_path):
    assert EncoderSettings.load(tmp_path) is None
    s = EncoderSettings(pooling="mean", normalize=True, query_prefix="问：")
    s.save(tmp_path)
    assert EncoderSettings.load(tmp_path) == s
    (tmp_path / SETTINGS_FILE).write_text('{"pooling": "weightedmean"}')
    with pytest.raises(InputError, match=SETTINGS_FILE):
        EncoderSettings.load(tmp_path)


def test_pool():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool(hidden, mask, EncoderSettings(pooling="cls")), torch.tensor([[1.0, 0.0]]))
    assert torch.equal(pool(hidden, mask, EncoderSettings(pooling="mean")), torch.tensor([[2.0, 2.0]]))
    normed = pool(hidden, mask, EncoderSettings(pooling="mean", normalize=True))
    torch.testing.assert_close(normed, torch.tensor([[2.0, 2.0]]) / 8 ** 0.5)
    assert pool(hidden.half(), mask, EncoderSettings()).dtype == torch.float32
    assert torch.equal(pool(hidden, mask, EncoderSettings(pooling="max")), torch.tensor([[3.0, 4.0]]))
    assert torch.equal(pool(hidden, mask, EncoderSettings(pooling="lasttoken")), torch.tensor([[3.0, 4.0]]))
    left_padded = torch.tensor([[[100.0, 100.0], [1.0, 0.0], [3.0, 5.0]]])
    assert torch.equal(pool(left_padded, torch.tensor([[0, 1, 1]]), EncoderSettings(pooling="lasttoken")),
                       torch.tensor([[3.0, 5.0]]))


def test_save_and_load_round_trip(tmp_path):
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="q: ")
    path = make_bert_dir(tmp_path / "enc", settings)
    encoder = Encoder.from_pretrained(path).eval()
    assert encoder.settings == settings and encoder.hidden_size == 32
    tok = load_tokenizer(path)
    batch = tokenize(tok, ["我们的", "你是不是我们的人"], max_length=6)
    assert batch["input_ids"].shape == (2, 6)  # padded to the longest, capped at max_length
    assert batch["input_ids"][0].tolist()[:5] == [2, tok.convert_tokens_to_ids("我"), tok.convert_tokens_to_ids("们"),
                                                   tok.convert_tokens_to_ids("的"), 3]
    with torch.no_grad():
        out = encoder(batch["input_ids"], batch["attention_mask"])
        again = Encoder.from_pretrained(path).eval()(batch["input_ids"], batch["attention_mask"])
    assert out.shape == (2, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out, again)
    explicit = Encoder.from_pretrained(path, EncoderSettings(pooling="cls"))
    assert explicit.settings.pooling == "cls"


def test_sentence_transformers_files(tmp_path):
    path = make_bert_dir(tmp_path / "enc", EncoderSettings(pooling="mean", normalize=True, query_prefix="query: "))
    modules = json.loads((path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    assert {k for k, v in pooling.items() if v is True} == {"pooling_mode_mean_tokens", "include_prompt"}
    assert pooling["word_embedding_dimension"] == 32
    st = json.loads((path / "config_sentence_transformers.json").read_text())
    assert st["prompts"] == {"query": "query: ", "passage": "", "document": ""} and st["similarity_fn_name"] == "cosine"
    plain = make_bert_dir(tmp_path / "plain")
    assert not (plain / "2_Normalize").exists()
    assert json.loads((plain / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "dot"
