import copy
import logging

import numpy as np
import pytest
import torch

from dpr.encode import encode_stream, encode_texts, pad_batch
from dpr.models.encoder import Encoder
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


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the device-to-host reads (cpu/numpy/item/tolist/bool) that dpr/encode.py itself makes."""

    READS = {"cpu", "item", "tolist", "__bool__", "__float__", "__int__"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import sys

        if getattr(func, "__name__", "") in self.READS and sys._getframe(1).f_code.co_filename.endswith(
                "dpr/encode.py"):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_the_host_waits_once_per_block_not_once_per_batch(tower):
    encoder, tok = tower
    texts = [t for _, t in random_passages(24, seed=3)]
    with _HostReads() as reads:
        blocks = list(encode_stream(encoder, tok, texts, "passage", 40, batch_size=2, block_size=8))
    assert len(blocks) == 3 and reads.count == 3  # 12 batches, 3 blocks


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
