import torch

from dpr.models.encoder import Encoder, EncoderSettings, pool
from dpr.models.tokens import pad_batch, padding_of, tokenize, tokenize_ids
from dpr.training.data import sorted_chunks
from tests.tiny_encoder import tiny_bert, tiny_tokenizer

TEXTS = ["北京", "中国的首都是北京", "我们", "这是一个很长的句子，有很多的字"]


def test_one_padding_rule_for_training_chunks_and_encoding_whichever_side():
    for side in ("right", "left"):
        tok = tiny_tokenizer()
        tok.padding_side = side
        pad_id, left = padding_of(tok)
        assert left == (side == "left")
        ids = tokenize_ids(tok, TEXTS, 12)
        assert ids[0] == [tok.cls_token_id, *tok.convert_tokens_to_ids(["北", "京"]), tok.sep_token_id]
        batch = tokenize(tok, TEXTS, 12)
        chunks, order = sorted_chunks(ids, len(TEXTS), pad_id, left)  # one chunk: the batch as is
        assert order is None
        assert torch.equal(chunks[0]["input_ids"], batch["input_ids"])
        assert torch.equal(chunks[0]["attention_mask"], batch["attention_mask"])
        short = batch["attention_mask"][0]
        assert (short[0] == 0) if left else (short[-1] == 0)  # padded on the tokenizer's side
        ref_ids, ref_mask = pad_batch(ids, pad_id, left)
        assert torch.equal(ref_ids, batch["input_ids"]) and torch.equal(ref_mask, batch["attention_mask"])


def test_cls_pooling_reads_the_first_real_token_on_either_padding_side():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    right = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    left = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    cls = EncoderSettings(pooling="cls")
    assert torch.equal(pool(hidden, right, cls), hidden[:, 0])
    assert torch.equal(pool(hidden, left, cls), torch.stack([hidden[0, 0], hidden[1, 2]]))  # not the pad at 0
    # and through a model: a left-padded batch's CLS vector is read at the [CLS] position, not at a pad
    enc = Encoder(tiny_bert(3), cls)
    tok = tiny_tokenizer()
    tok.padding_side = "left"
    batch = tokenize(tok, TEXTS[:2], 12)
    with torch.no_grad():
        states = enc.model(**batch).last_hidden_state
        vec = enc(**batch)
    first = batch["attention_mask"][0].argmax()
    assert first > 0 and batch["input_ids"][0, first] == tok.cls_token_id
    assert torch.allclose(vec[0], states[0, first])


def _pad_rows(seqs, pad_id, left):
    """The per-row padding of 86798d5 (the rule pad_batch keeps, now vectorised)."""
    width = max(len(s) for s in seqs)
    ids, mask = torch.full((len(seqs), width), pad_id, dtype=torch.int64), torch.zeros((len(seqs), width),
                                                                                           dtype=torch.int64)
    for row, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = torch.tensor(seq, dtype=torch.int64)
        mask[row, cols] = 1
    return ids, mask


def test_vectorised_padding_gives_the_tensors_of_the_row_loop_and_the_same_training_chunks():
    import random

    rng = random.Random(0)
    for trial in range(30):
        seqs = [[rng.randrange(1, 50_000) for _ in range(rng.randrange(1, 40))] for _ in range(rng.randrange(1, 20))]
        for left in (False, True):
            ids, mask = pad_batch(seqs, 7, left)
            ref_ids, ref_mask = _pad_rows(seqs, 7, left)
            assert ids.dtype == mask.dtype == torch.int64
            assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask), (trial, left)
            chunks, order = sorted_chunks(seqs, 4, 7, left)  # training chunks: built by pad_batch
            sorted_seqs = [seqs[i] for i in (order.tolist() if order is not None else range(len(seqs)))]
            for k, c in enumerate(chunks):
                ref = _pad_rows(sorted_seqs[4 * k : 4 * k + 4], 7, left)
                assert torch.equal(c["input_ids"], ref[0]) and torch.equal(c["attention_mask"], ref[1])


def test_tokenize_ids_through_the_backend_equals_the_tokenizers_own_call():
    from dpr.models import tokens

    tok = tiny_tokenizer()
    texts = TEXTS * 3 + ["很长的句子" * 10]
    for side in ("right", "left"):
        tok.truncation_side = side
        want = tok(texts, max_length=9, truncation=True)["input_ids"]
        assert tokenize_ids(tok, texts, 9) == want and max(map(len, want)) == 9
    assert tok.is_fast and tokens._called(tok, texts, 9) == tokenize_ids(tok, texts, 9)


def test_tokenize_ids_falls_back_to_the_call_when_the_backend_disagrees(monkeypatch):
    tok = tiny_tokenizer()
    texts = TEXTS * 2
    want = tok(texts, max_length=12, truncation=True)["input_ids"]
    backend = tok.backend_tokenizer

    class Off:  # a backend whose ids differ from the tokenizer's call (e.g. Python-side processing in the call)
        def encode_batch(self, batch, add_special_tokens):
            return [type("E", (), {"ids": e.ids[1:]})() for e in backend.encode_batch(batch, add_special_tokens=add_special_tokens)]

    monkeypatch.setattr(type(tok), "backend_tokenizer", property(lambda self: Off()))
    assert tokenize_ids(tok, texts, 12) == want
