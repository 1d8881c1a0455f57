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
