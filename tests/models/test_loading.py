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
    with pytest.raises(InputError, match="not a local directory.*--pretrained_model_cfg"):
        load_encoder_pair("no-such-org/no-such-model")
    with pytest.raises(InputError, match="no such directory"):
        load_encoder_pair("/no/such/model/dir")


def test_registry_name(e5_dir, monkeypatch):
    monkeypatch.setenv("DPR_CACHE_DIR", str(e5_dir.parent))
    q, p, tok = load_encoder_pair("multilingual-e5-small")
    assert q is p and q.settings.pooling == "mean" and q.settings.query_prefix == "query: "
    assert tok("query: 你好")["input_ids"][0] == 0


# ----- load_towers: the one loader of every script -----

from contextlib import nullcontext  # noqa: E402

import torch  # noqa: E402

from dpr.models import encoder as encoder_module  # noqa: E402
from dpr.models.encoder import Encoder  # noqa: E402
from dpr.models.loading import TowerOptions, load_towers  # noqa: E402


def _pair(tmp_path):
    make_bert_dir(tmp_path / "pair" / "question_encoder", EncoderSettings(pooling="mean"), seed=1)
    make_bert_dir(tmp_path / "pair" / "passage_encoder", EncoderSettings(pooling="mean"), seed=2)
    return tmp_path / "pair"


def _count_loads(monkeypatch) -> list[str]:
    loaded: list[str] = []
    real = Encoder.from_pretrained.__func__

    def spy(cls, path, *a, **k):
        loaded.append(str(path))
        return real(cls, path, *a, **k)

    monkeypatch.setattr(Encoder, "from_pretrained", classmethod(spy))
    return loaded


def test_load_towers_loads_only_the_tower_asked_for(tmp_path, monkeypatch):
    pair = _pair(tmp_path)
    loaded = _count_loads(monkeypatch)
    t = load_towers(TowerOptions(str(pair)), need="passage")
    assert t.question is None and t.passage is not None and loaded == [str(pair / "passage_encoder")]
    loaded.clear()
    t = load_towers(TowerOptions(str(pair)), need="question")
    assert t.passage is None and loaded == [str(pair / "question_encoder")]
    loaded.clear()
    t = load_towers(TowerOptions(str(pair)), need="both")
    assert t.question is not t.passage and len(loaded) == 2
    loaded.clear()
    t = load_towers(TowerOptions(str(pair), shared=True), need="both")
    assert t.question is t.passage and loaded == [str(pair / "question_encoder")]


def test_load_towers_single_dir_and_overrides(tmp_path):
    path = make_bert_dir(tmp_path / "single", EncoderSettings(pooling="mean"))
    t = load_towers(TowerOptions(str(path), pooling="cls", lowercase=True, normalize=True))
    # two trainable copies of one start, with the overrides applied to each
    assert t.question is not t.passage
    assert t.question.model.embeddings.word_embeddings.weight.equal(t.passage.model.embeddings.word_embeddings.weight)
    for enc in (t.question, t.passage):
        assert (enc.settings.pooling, enc.settings.lowercase, enc.settings.normalize) == ("cls", True, True)
    t = load_towers(TowerOptions(str(path), shared=True))
    assert t.question is t.passage and t.question.settings.pooling == "mean"


def test_half_precision_checkpoint_loads_in_fp32_and_trains_under_a_grad_scaler(tmp_path):
    """Defect 4: transformers 5 loads with dtype="auto", so a checkpoint saved in fp16 trained in fp16 and
    GradScaler.unscale_ raised 'Attempting to unscale FP16 gradients'."""
    from dpr.training.data import chunked
    from dpr.training.grad_cache import cached_step
    from dpr.training.loss import biencoder_nll

    path = make_bert_dir(tmp_path / "half")
    enc = Encoder.from_pretrained(path)
    enc.model.half()
    enc.save_pretrained(tmp_path / "half16", load_tokenizer_for(path))
    t = load_towers(TowerOptions(str(tmp_path / "half16")))
    for enc in (t.question, t.passage):
        assert {p.dtype for p in enc.parameters()} == {torch.float32}
    q_ids = t.tokenizer(["我们的", "你在这"])["input_ids"]
    p_ids = t.tokenizer(["我们的人", "他来了", "你在这里", "大国"])["input_ids"]
    params = list(t.question.parameters()) + list(t.passage.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    cached_step(t.question, t.passage, chunked(q_ids, 1, 0), chunked(p_ids, 3, 0),
                lambda q, p: biencoder_nll(q, p, 2, 0.1), lambda loss: scaler.scale(loss).backward(), nullcontext)
    scaler.unscale_(opt)  # raised ValueError on fp16 gradients
    scaler.step(opt)
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in params)


def load_tokenizer_for(path):
    return encoder_module.load_tokenizer(path)
