"""A tiny random BERT bi-encoder saved the way training saves one (question_encoder/ + passage_encoder/), for
offline tests of encoding, search and retrieval."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from dpr.models.encoder import Encoder, EncoderSettings

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多"
             "定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把北京首问文")
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}


def bert_tokenizer(vocab: dict[str, int], **kwargs) -> BertTokenizerFast:
    """A BERT WordPiece tokenizer from a token -> id dict on every supported transformers: 5.x takes the dict,
    4.x only a vocab.txt file (written to a temp dir here)."""
    import tempfile

    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return BertTokenizerFast(vocab=vocab, **kwargs)
    vocab_file = Path(tempfile.mkdtemp(prefix="tiny-vocab-")) / "vocab.txt"
    vocab_file.write_text("".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])), encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(vocab_file), **kwargs)


def tiny_tokenizer() -> BertTokenizerFast:
    return bert_tokenizer(VOCAB, do_lower_case=True, tokenize_chinese_chars=True)


def tiny_bert(seed: int, hidden: int = 32) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    return BertModel(config, add_pooling_layer=False).eval()


def save_tiny_biencoder(root: Path, hidden: int = 32, settings: EncoderSettings | None = None) -> Path:
    """Write root/question_encoder and root/passage_encoder (different random weights); returns root."""
    tok = tiny_tokenizer()
    settings = settings or EncoderSettings(pooling="mean", normalize=True, query_prefix="问", passage_prefix="文")
    for seed, name in ((1, "question_encoder"), (2, "passage_encoder")):
        Encoder(tiny_bert(seed, hidden), settings).save_pretrained(root / name, tok)
    return root


def random_passages(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(id, text) pairs of random lengths drawn from the tiny vocabulary's characters."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(2, 60, (1,), generator=g))
        idx = torch.randint(0, len(CHARS), (length,), generator=g).tolist()
        out.append((f"p{i:04d}", "".join(CHARS[j] for j in idx)))
    return out


def write_passages_tsv(path: Path, passages: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.write("id\ttext\ttitle\n")
        for pid, text in passages:
            f.write(f"{pid}\t{text}\t\n")
    return path
