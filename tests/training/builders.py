"""Tiny random BERT towers and tiny DPR JSON files, built offline inside the tests."""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from dpr.models.encoder import Encoder
from tests.tiny_encoder import bert_tokenizer

torch.set_num_threads(1)  # tiny models: threads only add contention on shared CI cores

CHARS = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后什么"


def make_tokenizer() -> BertTokenizerFast:
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS])}
    return bert_tokenizer(vocab, do_lower_case=True, tokenize_chinese_chars=True)


def make_model_dir(path: Path, dropout: float = 0.1, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and a real character vocabulary, saved as an HF dir."""
    torch.manual_seed(seed)
    tok = make_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=128, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    Encoder(BertModel(cfg, add_pooling_layer=False)).save_pretrained(path, tok)
    return path


def random_text(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(lo, hi)))


def make_dpr_json(path: Path, n: int, seed: int = 0, n_hard: int = 3, n_other: int = 2, p_len: tuple = (5, 60)) -> Path:
    rng = random.Random(seed)
    pid = iter(range(10**9))

    def ctx() -> dict:
        return {"title": "", "text": random_text(rng, *p_len), "passage_id": str(next(pid))}

    items = [{"question": random_text(rng, 3, 15), "question_id": str(i), "answers": [],
              "positive_ctxs": [ctx() for _ in range(rng.randint(1, 2))],
              "hard_negative_ctxs": [ctx() for _ in range(rng.randint(0, n_hard))],
              "negative_ctxs": [ctx() for _ in range(rng.randint(0, n_other))]} for i in range(n)]
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


