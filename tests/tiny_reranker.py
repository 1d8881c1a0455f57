"""A tiny random cross-encoder (reranker) saved as train_reranker.py saves one, for offline tests of reranking and
denoising. No training: its scores are random but fixed by the seed."""
from __future__ import annotations

from pathlib import Path

import torch

from dpr.models.cross_encoder import CrossEncoderSettings, new_cross_encoder, save_cross_encoder
from dpr.models.encoder import Encoder
from tests.tiny_encoder import tiny_bert, tiny_tokenizer

SETTINGS = CrossEncoderSettings(max_length=64, q_max_length=16, do_lower_case=False)


def save_tiny_reranker(root: Path, settings: CrossEncoderSettings = SETTINGS, seed: int = 5) -> Path:
    """root/reranker: a tiny random BERT with a new one-logit head and `settings` recorded; returns its path."""
    Encoder(tiny_bert(seed)).save_pretrained(root / "reranker_base", tiny_tokenizer())
    torch.manual_seed(seed)
    ce = new_cross_encoder(str(root / "reranker_base"), settings)
    with torch.no_grad():  # a head with some spread, so that scores differ visibly between pairs (tenths apart)
        torch.nn.init.normal_(ce.model.classifier.weight, std=20.0)
    save_cross_encoder(ce, root / "reranker")
    return root / "reranker"
