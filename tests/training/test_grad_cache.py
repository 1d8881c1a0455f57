"""The gradient cache is exact: cached gradients equal one forward/backward over the whole batch."""
from __future__ import annotations

import copy
import random
from functools import partial

import pytest
import torch

from dpr.models.encoder import Encoder
from dpr.training.data import chunked, sorted_chunks
from dpr.training.grad_cache import cached_step, encode_no_grad, full_step
from dpr.training.loss import biencoder_nll
from dpr.training.trainer import enable_gradient_checkpointing
from tests.training.builders import CHARS, make_tokenizer, random_text

PPQ = 3  # passages per question
N_Q = 7


def _amp():
    import contextlib

    return contextlib.nullcontext()


def _batch(seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    tok = make_tokenizer()
    q = tok([random_text(rng, 2, 12) for _ in range(N_Q)])["input_ids"]
    p = tok([random_text(rng, 3, 40) for _ in range(N_Q * PPQ)])["input_ids"]
    return q, p


def _towers(model_dir, dtype: torch.dtype = torch.float32) -> tuple[Encoder, Encoder]:
    q = Encoder.from_pretrained(model_dir).to(dtype)
    p = copy.deepcopy(q)
    q.train()
    p.train()
    return q, p


def _grads(q_enc: Encoder, p_enc: Encoder, step, q_chunk: int, p_chunk: int, seed: int = 123,
           temperature: float = 1.0, scale: float = 1.0, by_length: bool = False) -> torch.Tensor:
    q_ids, p_ids = _batch()
    q_enc.zero_grad(set_to_none=True)
    p_enc.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss_fn = partial(biencoder_nll, passages_per_question=PPQ, temperature=temperature)
    if by_length:
        (q_chunks, q_order), (p_chunks, p_order) = sorted_chunks(q_ids, q_chunk, 0), sorted_chunks(p_ids, p_chunk, 0)
    else:
        q_chunks, q_order, p_chunks, p_order = chunked(q_ids, q_chunk, 0), None, chunked(p_ids, p_chunk, 0), None
    step(q_enc, p_enc, q_chunks, p_chunks, loss_fn, lambda loss: (loss * scale).backward(), _amp, q_order, p_order)
    return torch.cat([prm.grad.reshape(-1) for m in (q_enc, p_enc) for prm in m.parameters()])


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("by_length", [False, True])
@pytest.mark.parametrize("q_chunk,p_chunk", [(1, 1), (2, 4), (3, 5), (7, 21), (100, 100)])
def test_cached_equals_uncached_whole_batch_without_dropout(tiny_model_dir_no_dropout, q_chunk, p_chunk, by_length):
    """Against one un-chunked pass padded to the batch's longest text. In float64: in fp32 the different padding
    and matmul shapes alone move the gradient by ~3e-5 relative (fp32's own error vs fp64 here is ~5e-5)."""
    q_enc, p_enc = _towers(tiny_model_dir_no_dropout, torch.float64)
    reference = _grads(q_enc, p_enc, full_step, N_Q, N_Q * PPQ)  # one chunk each: padded to the batch's longest
    cached = _grads(q_enc, p_enc, cached_step, q_chunk, p_chunk, by_length=by_length)
    assert reference.norm() > 0
    assert _rel_err(cached, reference) <= 1e-5


@pytest.mark.parametrize("by_length", [False, True])
@pytest.mark.parametrize("q_chunk,p_chunk", [(2, 4), (3, 5), (4, 8), (7, 21)])
def test_cached_equals_uncached_with_dropout(tiny_model_dir, q_chunk, p_chunk, by_length):
    """fp32, dropout on: the reference forwards the same chunks with one graph (same dropout masks) and backpropagates
    once; the cache must reproduce it."""
    q_enc, p_enc = _towers(tiny_model_dir)
    reference = _grads(q_enc, p_enc, full_step, q_chunk, p_chunk, temperature=0.05, by_length=by_length)
    cached = _grads(q_enc, p_enc, cached_step, q_chunk, p_chunk, temperature=0.05, by_length=by_length)
    assert _rel_err(cached, reference) <= 1e-5
    other_seed = _grads(q_enc, p_enc, full_step, q_chunk, p_chunk, seed=999, temperature=0.05)
    assert _rel_err(other_seed, reference) > 1e-3  # dropout really is on: the test could fail


def test_loss_scale_reaches_second_pass(tiny_model_dir):
    """Whatever backward does to the loss (GradScaler multiplies it) is carried by the cached gradients."""
    q_enc, p_enc = _towers(tiny_model_dir)
    plain = _grads(q_enc, p_enc, cached_step, 3, 5)
    scaled = _grads(q_enc, p_enc, cached_step, 3, 5, scale=1024.0)
    assert _rel_err(scaled / 1024.0, plain) <= 1e-6


def test_rng_replay_gives_identical_dropout(tiny_model_dir):
    q_enc, _ = _towers(tiny_model_dir)
    q_ids, _ = _batch()
    chunks = chunked(q_ids, 3, 0)
    torch.manual_seed(5)
    reps, states = encode_no_grad(q_enc, chunks, _amp)
    replayed, fresh = [], []
    with torch.no_grad():
        for chunk, state in zip(chunks, states):
            with state.replay():
                replayed.append(q_enc(**chunk))
            fresh.append(q_enc(**chunk))
    assert torch.equal(torch.cat(replayed), reps)
    assert not torch.allclose(torch.cat(fresh), reps)  # without the replay the dropout masks differ


def test_replay_leaves_outer_rng_untouched(tiny_model_dir):
    q_enc, _ = _towers(tiny_model_dir)
    q_ids, _ = _batch()
    torch.manual_seed(1)
    _, states = encode_no_grad(q_enc, chunked(q_ids, 3, 0), _amp)
    before = torch.get_rng_state()
    with states[0].replay():
        torch.rand(10)
    assert torch.equal(torch.get_rng_state(), before)


def test_gradient_checkpointing_with_cache_is_exact(tiny_model_dir):
    q_enc, p_enc = _towers(tiny_model_dir)
    reference = _grads(q_enc, p_enc, cached_step, 3, 5)
    for enc in (q_enc, p_enc):
        enable_gradient_checkpointing(enc)
    with_ckpt = _grads(q_enc, p_enc, cached_step, 3, 5)
    assert _rel_err(with_ckpt, reference) <= 1e-5


def test_vocab_is_real():
    tok = make_tokenizer()
    assert tok.convert_tokens_to_ids(CHARS[0]) == 5 and tok.unk_token_id == 1
    assert tok(CHARS[:3])["input_ids"] == [2, 5, 6, 7, 3]


@pytest.mark.parametrize("by_length", [False, True])
def test_masked_false_negatives_cached_equals_uncached_and_equals_the_column_removed(tiny_model_dir_no_dropout,
                                                                                    by_length):
    """Question 0's positive text reappears as question 4's hard negative (column 13): masked, the loss is the loss
    without that column, and the cache still gives the uncached gradient."""
    q_enc, p_enc = _towers(tiny_model_dir_no_dropout, torch.float64)
    q_ids, p_ids = _batch()
    p_ids = list(p_ids)
    p_ids[4 * PPQ + 1] = p_ids[0]
    masked = torch.tensor([[0, 4 * PPQ + 1], [4, 0]])  # and question 4 does not push away question 0's positive
    losses, grads = {}, {}
    for name, step, qc, pc in (("full", full_step, N_Q, N_Q * PPQ), ("cached", cached_step, 2, 4)):
        q_enc.zero_grad(set_to_none=True)
        p_enc.zero_grad(set_to_none=True)
        loss_fn = partial(biencoder_nll, passages_per_question=PPQ, temperature=0.1, masked=masked)
        if by_length:
            (qch, qo), (pch, po) = sorted_chunks(q_ids, qc, 0), sorted_chunks(p_ids, pc, 0)
        else:
            qch, qo, pch, po = chunked(q_ids, qc, 0), None, chunked(p_ids, pc, 0), None
        losses[name], _ = step(q_enc, p_enc, qch, pch, loss_fn, lambda loss: loss.backward(), _amp, qo, po)
        grads[name] = torch.cat([prm.grad.reshape(-1) for m in (q_enc, p_enc) for prm in m.parameters()])
    assert _rel_err(grads["cached"], grads["full"]) <= 1e-5
    with torch.no_grad():
        q = q_enc(**chunked(q_ids, N_Q, 0)[0])
        p = p_enc(**chunked(p_ids, N_Q * PPQ, 0)[0])
        scores = q @ p.T / 0.1
        removed = 0.0
        for i in range(N_Q):
            cols = [j for j in range(N_Q * PPQ) if not ((i == 0 and j == 4 * PPQ + 1) or (i == 4 and j == 0))]
            removed -= float(torch.log_softmax(scores[i, cols], 0)[cols.index(i * PPQ)])
        unmasked = float(biencoder_nll(q, p, PPQ, 0.1)[0])
    assert abs(losses["full"] - removed / N_Q) < 1e-6 and abs(losses["cached"] - removed / N_Q) < 1e-6  # fp32 pooling
    assert abs(unmasked - removed / N_Q) > 1e-4


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the device-to-host reads (item/tolist/bool/int/float/cpu) made by the step and the loss themselves."""

    READS = {"cpu", "item", "tolist", "__bool__", "__float__", "__int__"}
    FILES = ("dpr/training/grad_cache.py", "dpr/training/loss.py")

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import sys

        if getattr(func, "__name__", "") in self.READS and sys._getframe(1).f_code.co_filename.endswith(self.FILES):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("step", [cached_step, full_step])
def test_one_host_read_per_step_with_the_same_loss_and_gradients(tiny_model_dir_no_dropout, step):
    """The training loss (global_nll, false negatives masked) is read once per step, after every backward is queued
    (was: the mask check, the accuracy and the loss: three waits on the device); loss and gradients as before."""
    from dpr.training.loss import global_nll

    q_enc, p_enc = _towers(tiny_model_dir_no_dropout)
    q_ids, p_ids = _batch()
    masked = torch.tensor([[0, 4], [2, 1], [5, 3]])
    results = []
    for loss_fn in (partial(global_nll, passages_per_question=PPQ, temperature=0.1, masked=masked),
                    partial(biencoder_nll, passages_per_question=PPQ, temperature=0.1, masked=masked)):
        q_enc.zero_grad(set_to_none=True)
        p_enc.zero_grad(set_to_none=True)
        with _HostReads() as reads:
            loss, correct = step(q_enc, p_enc, chunked(q_ids, 3, 0), chunked(p_ids, 5, 0), loss_fn,
                                 lambda loss: loss.backward(), _amp)
        grads = torch.cat([prm.grad.reshape(-1) for m in (q_enc, p_enc) for prm in m.parameters()])
        results.append((loss, correct, grads, reads.count))
    (loss, correct, grads, reads), (ref_loss, ref_correct, ref_grads, _) = results
    assert reads == 1 and isinstance(loss, float) and isinstance(correct, int)
    assert loss == pytest.approx(ref_loss, rel=1e-6) and correct == ref_correct
    assert torch.allclose(grads, ref_grads, rtol=1e-5, atol=1e-7)


class _OrderCopies(torch.overrides.TorchFunctionMode):
    """Records every `.to` of the given tensors with its keyword arguments."""

    def __init__(self, *watched: torch.Tensor):
        super().__init__()
        self.watched, self.calls = [id(t) for t in watched], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "to" and args and id(args[0]) in self.watched:
            self.calls.append(dict(kwargs or {}))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("step", [cached_step, full_step])
def test_the_order_tensors_are_copied_once_each_without_blocking(tiny_model_dir_no_dropout, step):
    """On CUDA a blocking copy waits for the stream; on CPU the copy is a no-op, so the call itself is checked."""
    q_enc, p_enc = _towers(tiny_model_dir_no_dropout)
    q_ids, p_ids = _batch()
    (q_chunks, q_order), (p_chunks, p_order) = sorted_chunks(q_ids, 3, 0), sorted_chunks(p_ids, 5, 0)
    loss_fn = partial(biencoder_nll, passages_per_question=PPQ, temperature=1.0)
    with _OrderCopies(q_order, p_order) as copies:
        step(q_enc, p_enc, q_chunks, p_chunks, loss_fn, lambda loss: loss.backward(), _amp, q_order, p_order)
    assert copies.calls == [{"non_blocking": True}] * 2


def test_read_false_leaves_the_loss_on_the_device_for_one_read_with_more(tiny_model_dir_no_dropout):
    from dpr.training.grad_cache import read_together

    q_enc, p_enc = _towers(tiny_model_dir_no_dropout)
    q_ids, p_ids = _batch()
    loss_fn = partial(biencoder_nll, passages_per_question=PPQ, temperature=1.0)
    args = (q_enc, p_enc, chunked(q_ids, 3, 0), chunked(p_ids, 5, 0), loss_fn, lambda loss: loss.backward(), _amp)
    loss, correct = cached_step(*args, read=False)
    assert isinstance(loss, torch.Tensor) and not loss.requires_grad
    ref_loss, ref_correct = cached_step(*args)
    got = read_together(loss, correct, torch.tensor(2.5), 7)
    assert got[0] == pytest.approx(ref_loss, rel=1e-6) and int(got[1]) == ref_correct and got[2:] == [2.5, 7.0]
