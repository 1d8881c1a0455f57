"""sentence-transformers both ways: our towers encode in sentence-transformers exactly as here, and a
sentence-transformers directory a user brings encodes here exactly as there."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModel, BertConfig, BertModel, BertTokenizerFast

import generate_dense_embeddings as gen
from dpr.encode import encode_texts
from dpr.index.embeddings import load_shard
from dpr.models.encoder import Encoder, EncoderSettings, load_tokenizer
from dpr.models.loading import TowerOptions, apply_options, load_encoder_pair
from dpr.models.sentence_transformers_dir import read_settings
from dpr.training.checkpoint import save_checkpoint
from dpr.utils.io import InputError
from tests.tiny_encoder import CHARS, SPECIALS, bert_tokenizer, tiny_bert, tiny_tokenizer

st = pytest.importorskip("sentence_transformers")

LATIN = ["A", "B", "a", "b"]
VOCAB = {t: i for i, t in enumerate(SPECIALS + CHARS + LATIN)}
QUERIES = ["北京是中国的首都吗", "AB的一是", "ab的一是", "学生在家里学习"]
PASSAGES = ["北京是中华人民共和国的首都，也是全国的政治中心。" * 2, "AB 是一个 BA 的例子，不是 ab 的。", "我们在学校里学习。"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def cased_tokenizer() -> BertTokenizerFast:
    """A tokenizer that keeps case (so lowercasing is visible in the token ids)."""
    return bert_tokenizer(VOCAB, do_lower_case=False, tokenize_chinese_chars=True)


def cased_bert(seed: int) -> BertModel:
    import torch

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=128)
    return BertModel(cfg, add_pooling_layer=False).eval()


@contextlib.contextmanager
def transformers_messages():
    """Every message the transformers loggers emit (warnings and the load report included) inside the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    messages: list[str] = []
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        messages.extend(r.getMessage() for r in records)


def pooler_complaints(messages: list[str]) -> list[str]:
    return [m for m in messages if any(w in m for w in ("MISSING", "UNEXPECTED", "newly initialized", "not used"))]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A training checkpoint (two towers, lowercasing, prefixes with capitals) saved with lengths 8 / 16."""
    root = tmp_path_factory.mktemp("ckpt")
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="Q问", passage_prefix="P文", lowercase=True)
    q, p = Encoder(cased_bert(1), settings), Encoder(cased_bert(2), EncoderSettings(**vars(settings)))
    save_checkpoint(root / "dpr_biencoder.0.1", q, p, cased_tokenizer(), {}, q_max_length=8, p_max_length=16)
    return root / "dpr_biencoder.0.1"


def test_export_each_tower_is_a_sentence_transformers_model_for_its_side(checkpoint):
    q_dir, p_dir = Path(f"{checkpoint}.question_encoder"), Path(f"{checkpoint}.passage_encoder")
    q_st, p_st = st.SentenceTransformer(str(q_dir), device="cpu"), st.SentenceTransformer(str(p_dir), device="cpu")
    assert (q_st.max_seq_length, p_st.max_seq_length) == (8, 16)
    assert json.loads((q_dir / "sentence_bert_config.json").read_text()) == {"max_seq_length": 8, "do_lower_case": True}
    assert q_st.prompts["document"] == q_st.prompts["passage"] == "P文"
    q_enc, p_enc = Encoder.from_pretrained(q_dir), Encoder.from_pretrained(p_dir)
    tok = load_tokenizer(q_dir)
    ours_q = encode_texts(q_enc, tok, QUERIES, "query", 8)
    ours_p = encode_texts(p_enc, tok, PASSAGES, "passage", 16)
    assert np.all(cosines(q_st.encode_query(QUERIES), ours_q) >= 0.9999)
    assert np.all(cosines(p_st.encode_document(PASSAGES), ours_p) >= 0.9999)
    # the checks above can fail: lowercasing, the length cap and the prefix each change these vectors
    assert cosines(ours_q[1:2], ours_q[2:3])[0] > 0.9999  # "AB..." lowercased like "ab..."
    assert np.all(cosines(encode_texts(p_enc, tok, PASSAGES, "passage", 64), ours_p)[:1] < 0.9999)
    assert np.all(cosines(p_st.encode(PASSAGES), ours_p) < 0.9999)  # without the passage prompt


def test_a_shared_tower_exports_the_passage_length(tmp_path):
    enc = Encoder(tiny_bert(1), EncoderSettings(pooling="mean"))
    save_checkpoint(tmp_path / "dpr_biencoder.0.1", enc, enc, tiny_tokenizer(), {}, q_max_length=8, p_max_length=16)
    for side in ("question_encoder", "passage_encoder"):
        config = json.loads((tmp_path / f"dpr_biencoder.0.1.{side}" / "sentence_bert_config.json").read_text())
        assert config["max_seq_length"] == 16


def test_no_pooler_report_when_transformers_or_sentence_transformers_load_a_checkpoint(checkpoint, tmp_path):
    q_dir = f"{checkpoint}.question_encoder"
    with transformers_messages() as plain:
        AutoModel.from_pretrained(q_dir)
    with transformers_messages() as in_st:
        st.SentenceTransformer(q_dir, device="cpu")
    with transformers_messages() as ours:
        Encoder.from_pretrained(q_dir)
    assert pooler_complaints(plain + in_st + ours) == []
    # the capture does see the report when there is one: a directory without pooler weights
    cased_bert(3).save_pretrained(tmp_path / "bare")
    with transformers_messages() as control:
        AutoModel.from_pretrained(tmp_path / "bare")
    assert pooler_complaints(control)


def test_e5_small_in_sentence_transformers_equals_the_project(e5_dir, cmrc_questions, cmrc_sentences):
    model = st.SentenceTransformer(str(e5_dir), device="cpu")
    enc, tok = Encoder.from_pretrained(e5_dir), load_tokenizer(e5_dir)
    questions, passages = cmrc_questions[:8], cmrc_sentences[:8]
    assert np.all(cosines(model.encode_query(questions), encode_texts(enc, tok, questions, "query", 512)) >= 0.9999)
    assert np.all(cosines(model.encode_document(passages), encode_texts(enc, tok, passages, "passage", 512)) >= 0.9999)
    with transformers_messages() as messages:
        AutoModel.from_pretrained(e5_dir)
        Encoder.from_pretrained(e5_dir)
    assert pooler_complaints(messages) == []


# ---------------------------------------------------------------- import

def st_modules():
    """(Transformer, Pooling, Normalize, Dense) classes, wherever this sentence-transformers version keeps them."""
    try:
        from sentence_transformers.base.modules import Dense, Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return Transformer, Pooling, Normalize, Dense


def build_st_dir(root: Path, pooling: str, normalize: bool, prompts: dict | None = None, extra=()) -> Path:
    """A sentence-transformers model built and saved by sentence-transformers itself around a tiny BERT."""
    Transformer, Pooling, Normalize, _ = st_modules()
    hf = root / "hf"
    tiny_bert(5).save_pretrained(hf)
    tiny_tokenizer().save_pretrained(hf)
    modules = [Transformer(str(hf)), Pooling(32, pooling_mode=pooling)]
    modules += [Normalize()] if normalize else []
    modules += list(extra)
    model = st.SentenceTransformer(modules=modules, device="cpu", prompts=prompts)
    model.save(str(root / "st"))
    return root / "st"


@pytest.mark.parametrize("pooling,normalize", [("mean", True), ("cls", False), ("max", True), ("lasttoken", False)])
def test_a_sentence_transformers_dir_encodes_here_as_there(tmp_path, pooling, normalize):
    prompts = {"query": "问", "document": "文"}
    path = build_st_dir(tmp_path, pooling, normalize, prompts)
    q, p, tok = load_encoder_pair(path)
    assert q.settings == EncoderSettings(pooling=pooling, normalize=normalize, query_prefix="问", passage_prefix="文")
    model = st.SentenceTransformer(str(path), device="cpu")
    np.testing.assert_allclose(encode_texts(q, tok, QUERIES, "query", 64), model.encode_query(QUERIES), atol=2e-6)
    np.testing.assert_allclose(encode_texts(p, tok, PASSAGES, "passage", 64), model.encode_document(PASSAGES),
                               atol=2e-6)
    norms = np.linalg.norm(encode_texts(q, tok, QUERIES, "query", 64), axis=1)
    assert np.allclose(norms, 1.0) == normalize


def test_a_transformer_in_a_subfolder_and_legacy_pooling_keys(tmp_path):
    """The older layout: the HF model in 0_Transformer/, pooling written as pooling_mode_*_token booleans."""
    root = tmp_path / "old"
    tiny_bert(6).save_pretrained(root / "0_Transformer")
    tiny_tokenizer().save_pretrained(root / "0_Transformer")
    (root / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 64, "do_lower_case": false}')
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    q, _, tok = load_encoder_pair(root)
    assert q.settings == EncoderSettings(pooling="cls")
    expected = st.SentenceTransformer(str(root), device="cpu").encode(QUERIES)
    np.testing.assert_allclose(encode_texts(q, tok, QUERIES, "query", 64), expected, atol=2e-6)


def test_unsupported_modules_and_pooling_are_refused_by_name(tmp_path):
    _, _, _, Dense = st_modules()
    path = build_st_dir(tmp_path / "dense", "mean", False, extra=[Dense(32, 8)])
    with pytest.raises(InputError, match=r"modules\.json.*Dense"):
        Encoder.from_pretrained(path)
    path = build_st_dir(tmp_path / "weighted", "weightedmean", False)
    with pytest.raises(InputError, match=r"1_Pooling.*weightedmean"):
        Encoder.from_pretrained(path)


def test_prefix_flags_override_the_stored_prompts(tmp_path):
    path = build_st_dir(tmp_path, "mean", True, {"query": "问", "document": "文"})
    encoder = Encoder(tiny_bert(0), read_settings(path))
    apply_options(encoder, TowerOptions(str(path), query_prefix="为这个句子生成表示："))
    assert (encoder.settings.query_prefix, encoder.settings.passage_prefix) == ("为这个句子生成表示：", "文")
    # the flag's effect end to end: passages encoded without the stored prompt, as ST does with prompt=""
    ctx = tmp_path / "passages.tsv"
    ctx.write_text("id\ttext\ttitle\n" + "".join(f"p{i}\t{t}\t\n" for i, t in enumerate(PASSAGES)), encoding="utf-8")
    model = st.SentenceTransformer(str(path), device="cpu")
    for flags, expected in (([], model.encode_document(PASSAGES)),
                            (["--passage_prefix", ""], model.encode(PASSAGES, prompt=""))):
        out = tmp_path / f"emb{len(flags)}"
        assert gen.main(["--model_file", str(path), "--ctx_file", str(ctx), "--out_file", str(out), "--fp32", *flags]) == 0
        np.testing.assert_allclose(load_shard(f"{out}_shard0").vectors, expected, atol=2e-6)


def test_a_model_saved_in_a_subfolder_by_sentence_transformers_encodes_and_searches(tmp_path, capsys):
    """sentence-transformers saves its Transformer module under 0_Transformer/ when `save_in_root` is off (older
    versions always did): the fingerprint finds its files through modules.json, as the loader does."""
    import dense_retriever as dr
    from dpr.models.fingerprint import model_fingerprint

    Transformer, Pooling, Normalize, _ = st_modules()
    hf = tmp_path / "hf"
    tiny_bert(5).save_pretrained(hf)
    tiny_tokenizer().save_pretrained(hf)
    model = st.SentenceTransformer(modules=[Transformer(str(hf)), Pooling(32, pooling_mode="mean"), Normalize()],
                                   device="cpu", prompts={"query": "问", "document": "文"})
    model[0].save_in_root = False
    path = tmp_path / "st"
    model.save(str(path))
    assert (path / "0_Transformer" / "config.json").is_file() and not (path / "config.json").exists()
    fp = model_fingerprint(str(path))
    assert fp is not None and fp.question_tower == fp.passage_tower
    ctx = tmp_path / "passages.tsv"
    ctx.write_text("id\ttext\ttitle\n" + "".join(f"p{i}\t{t}\t\n" for i, t in enumerate(PASSAGES)), encoding="utf-8")
    out = tmp_path / "emb"
    assert gen.main(["--model_file", str(path), "--ctx_file", str(ctx), "--out_file", str(out), "--fp32"]) == 0
    loaded = st.SentenceTransformer(str(path), device="cpu")
    np.testing.assert_allclose(load_shard(f"{out}_shard0").vectors, loaded.encode_document(PASSAGES), atol=2e-6)
    capsys.readouterr()
    assert dr.main(["--model_file", str(path), "--index_dir", str(tmp_path), "--query", QUERIES[0], "--n_docs", "2",
                    "--fp32"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
