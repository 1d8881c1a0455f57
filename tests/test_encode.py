import copy
import logging

import numpy as np
import pytest
import torch

from dpr.encode import encode_stream, encode_texts, pad_batch
from dpr.models.encoder import Encoder
from tests.host_waits import DeferredCopies, HostWaits
from tests.tiny_encoder import random_passages, save_tiny_biencoder, tiny_tokenizer


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    root = save_tiny_biencoder(tmp_path_factory.mktemp("enc"))
    return Encoder.from_pretrained(root / "passage_encoder").eval(), tiny_tokenizer()


def one_by_one(encoder, tokenizer, texts, kind, max_length):
    """Reference: each text alone (no padding at all), prefix applied by hand."""
    prefix = encoder.settings.query_prefix if kind == "query" else encoder.settings.passage_prefix
    out = []
    with torch.no_grad():
        for t in texts:
            b = tokenizer([prefix + t], max_length=max_length, truncation=True, return_tensors="pt")
            out.append(encoder(b["input_ids"], b["attention_mask"])[0].numpy())
    return np.stack(out)


def test_order_restored_after_length_sort(tower):
    encoder, tok = tower
    texts = [t for _, t in random_passages(23)]
    assert len({len(t) for t in texts}) > 5  # lengths really differ, so the sort reorders
    got = encode_texts(encoder, tok, texts, "passage", max_length=40, batch_size=4)
    np.testing.assert_allclose(got, one_by_one(encoder, tok, texts, "passage", 40), atol=1e-5)


def test_stream_blocks_in_input_order(tower):
    encoder, tok = tower
    texts = [t for _, t in random_passages(11, seed=3)]
    blocks = list(encode_stream(encoder, tok, iter(texts), "query", 24, batch_size=3, block_size=4))
    assert [len(b) for b in blocks] == [4, 4, 3]
    np.testing.assert_allclose(np.concatenate(blocks), one_by_one(encoder, tok, texts, "query", 24), atol=1e-5)


def test_query_and_passage_prefixes_differ(tower):
    encoder, tok = tower
    q = encode_texts(encoder, tok, ["中国北京"], "query", 16)
    p = encode_texts(encoder, tok, ["中国北京"], "passage", 16)
    assert not np.allclose(q, p)


class OomAbove(torch.nn.Module):
    """Wraps an encoder and raises CUDA-style out-of-memory for batches larger than `limit`."""

    def __init__(self, inner: Encoder, limit: int):
        super().__init__()
        self.inner, self.limit, self.settings, self.hidden_size = inner, limit, inner.settings, inner.hidden_size
        self.sizes: list[int] = []

    def forward(self, ids, mask):
        self.sizes.append(len(ids))
        if len(ids) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(ids, mask)


def test_oom_halves_batch_and_continues(tower, caplog):
    encoder, tok = tower
    texts = [t for _, t in random_passages(19, seed=5)]
    wrapped = OomAbove(encoder, limit=3)
    with caplog.at_level(logging.WARNING):
        got = encode_texts(wrapped, tok, texts, "passage", 40, batch_size=16)
    np.testing.assert_allclose(got, encode_texts(encoder, tok, texts, "passage", 40, batch_size=16), atol=1e-5)
    assert wrapped.sizes[:3] == [16, 8, 4] and max(wrapped.sizes[3:]) == 2  # halved, then kept small
    assert "batch size halved to 2" in caplog.text


def test_oom_at_batch_size_one_is_raised(tower):
    encoder, tok = tower
    with pytest.raises(torch.OutOfMemoryError):
        encode_texts(OomAbove(encoder, limit=0), tok, ["中国", "北京"], "passage", 8, batch_size=2)


def test_empty_input(tower):
    encoder, tok = tower
    assert encode_texts(encoder, tok, [], "query", 8).shape == (0, encoder.hidden_size)


def test_training_mode_restored(tower):
    encoder, tok = tower
    encoder.train()
    encode_texts(encoder, tok, ["中国"], "query", 8)
    assert encoder.training
    encoder.eval()


def test_pad_batch_right_and_left():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=9, left=True)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


# ----- issue 23: the encoding levers give the same vectors -----

def test_several_tokenizing_threads_and_blocks_in_flight_give_the_same_vectors(tower):
    encoder, tok = tower
    texts = [t for _, t in random_passages(41, seed=9)]
    one = list(encode_stream(encoder, tok, texts, "passage", 40, batch_size=4, block_size=7, threads=1))
    many = list(encode_stream(encoder, tok, iter(texts), "passage", 40, batch_size=4, block_size=7, threads=4))
    assert [len(b) for b in many] == [7] * 5 + [6]
    np.testing.assert_allclose(np.concatenate(many), np.concatenate(one), atol=1e-6)
    np.testing.assert_allclose(np.concatenate(many), one_by_one(encoder, tok, texts, "passage", 40), atol=1e-5)


def test_each_tokenizing_thread_has_its_own_tokenizer(tower):
    from concurrent.futures import ThreadPoolExecutor

    from dpr.encode import _Tokenizers

    _, tok = tower
    tokenizers = _Tokenizers(tok)
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda _: (tokenizers.get(), __import__("time").sleep(0.05))[0], range(3)))
    assert len({id(t) for t in got}) == 3 and sum(t is tok for t in got) == 1
    assert all(t("北京大学")["input_ids"] == tok("北京大学")["input_ids"] for t in got)


def _events_in_order(copies: DeferredCopies, blocks: int) -> None:
    """Block k+1's forwards and copy are issued before block k is waited for; one wait per block."""
    log = copies.events()
    assert [b for kind, b in log if kind == "wait"] == list(range(blocks))
    for k in range(blocks - 1):
        wait_k = log.index(("wait", k))
        assert log.index(("copy", k + 1)) < wait_k and max(i for i, e in enumerate(log) if e == ("forward", k + 1)) < wait_k


def test_a_block_is_waited_for_only_after_the_next_is_launched(tower, monkeypatch):
    """CPU copies are synchronous, so the stand-in copy lands only at its event's wait: rows read too early would
    be zeros, and they are not; block k+1 is launched (forwards and copy queued) before block k's wait."""
    encoder, tok = tower
    texts = [t for _, t in random_passages(24, seed=3)]
    copies = DeferredCopies(monkeypatch)
    blocks = list(encode_stream(encoder, tok, texts, "passage", 40, batch_size=2, block_size=8))
    assert len(blocks) == 3
    _events_in_order(copies, 3)
    np.testing.assert_allclose(np.concatenate(blocks), one_by_one(encoder, tok, texts, "passage", 40), atol=1e-5)


@pytest.mark.parametrize("plant", ["no_wait", "stale", "unordered"])
def test_a_read_before_the_wait_or_out_of_order_is_caught(tower, monkeypatch, plant):
    """The check above fails on a planted fault: rows read without waiting (zeros), a host buffer shared by blocks
    (stale rows), or rows left in sorted order."""
    encoder, tok = tower
    texts = [t for _, t in random_passages(24, seed=3)]
    DeferredCopies(monkeypatch, plant=plant)
    got = np.concatenate(list(encode_stream(encoder, tok, texts, "passage", 40, batch_size=2, block_size=8)))
    assert not np.allclose(got, one_by_one(encoder, tok, texts, "passage", 40), atol=1e-5)
    if plant == "no_wait":
        assert not got.any()


def test_host_waits_one_per_block_and_one_per_padded_batch(tower, monkeypatch):
    """Counted in every frame: the block's event, and transformers' padding test in a padded batch's forward; an
    unpadded batch (the host knows it from the lengths) gets no mask and costs no wait."""
    encoder, tok = tower
    lengths = [9, 8, 7, 7, 5, 5, 3, 3]  # one block, batches of 2 sorted by length: (9, 8) is the only padded one
    texts = ["北" * n for n in lengths] * 2
    DeferredCopies(monkeypatch)
    with HostWaits() as waits:
        blocks = list(encode_stream(encoder, tok, texts, "passage", 40, batch_size=2, block_size=8))
    assert len(blocks) == 2
    assert sorted(waits.where) == sorted(["encode.py:event.synchronize"] * 2
                                         + ["masking_utils.py:_ignore_bidirectional_mask_sdpa:__bool__"] * 2), waits.where
    np.testing.assert_allclose(np.concatenate(blocks), one_by_one(encoder, tok, texts, "passage", 40), atol=1e-5)


def test_an_unpadded_batch_goes_to_the_model_without_a_mask(tower):
    from dpr.models.tokens import model_mask

    encoder, tok = tower
    ids, mask = pad_batch([[2, 7, 8, 3], [2, 9, 9, 3]], 0)
    assert model_mask(mask) is None
    with torch.no_grad():
        assert torch.allclose(encoder(ids, None), encoder(ids, mask), atol=1e-6)
    ids, mask = pad_batch([[2, 7, 8, 3], [2, 9, 3]], 0)
    assert model_mask(mask) is mask


def test_half_weights_stay_within_1e3_cosine_of_fp32_weights(tower):
    from dpr.encode import cast_for_inference, half_weights_dtype

    encoder, tok = tower
    texts = [t for _, t in random_passages(16, seed=11)]
    ref = encode_texts(encoder, tok, texts, "passage", 40, amp_dtype=torch.bfloat16)
    half = Encoder(copy.deepcopy(encoder.model), encoder.settings)
    cast_for_inference(half, torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16
    got = encode_texts(half, tok, texts, "passage", 40, amp_dtype=torch.bfloat16)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert got.dtype == np.float32 and cos.min() >= 1 - 1e-3
    assert half_weights_dtype("cuda", torch.float16) == torch.float16
    assert half_weights_dtype("cpu", torch.bfloat16) is None and half_weights_dtype("cuda", None) is None
