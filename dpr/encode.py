"""The one encoding routine: length-sorted batches, input order restored, autocast. Used by validation,
corpus encoding and question encoding, and (generalised to pairs: `score_pairs`) by the cross-encoder's scoring.

Texts are processed in blocks. Tokenization is off the critical path: while the model encodes one block, a pool of
threads tokenizes, length-sorts and pads the next ones (fast tokenizers release the GIL; each thread has its own
tokenizer, as a fast tokenizer must not be called from two threads at once); on CUDA several blocks are in flight
and the padded batches sit in pinned host memory, copied without blocking. Within a block, batches are formed from
length-sorted texts (longest first, so an out-of-memory shows up on the first batch) and padded only to their own
longest member: the block (--block_size texts) is the unit of length bucketing. A block's vectors stay on the device
until the next block's batches are queued, so the host waits on the device once per block, not once per batch. On
CUDA out-of-memory the batch size is halved and encoding continues.

Pairs (question, passage) go through the same blocks, threads, sorting, pinned batches and halving: a pair's token
ids (and its token type ids, where the tokenizer makes them) are sorted and padded together, and the model gives one
float per pair instead of a vector.
"""
from __future__ import annotations

import copy
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from dpr.models.encoder import Encoder, Kind
from dpr.models.tokens import pad_batch, padding_of, tokenize_ids
from dpr.utils.precision import autocast

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 8192


def tokenize_threads(device: torch.device | str) -> int:
    """Threads that tokenize blocks: one on CPU (the model needs the cores), up to 8 on CUDA (the GPU outruns one)."""
    if torch.device(device).type != "cuda":
        return 1
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def half_weights_dtype(device: torch.device | str, amp_dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype an encoder used only for inference is cast to: the autocast dtype on CUDA (no per-batch weight
    casts, half the weight memory; outputs within 1e-3 cosine of fp32 weights under the same autocast, tested on
    CPU in bf16), else None (CPU keeps fp32 weights: its autocast runs the fp32 master weights as before)."""
    return amp_dtype if torch.device(device).type == "cuda" and amp_dtype is not None else None


def cast_for_inference(encoder: Encoder, dtype: torch.dtype | None) -> Encoder:
    """Cast the encoder's floating-point weights to `dtype` in place (None: unchanged). Only for an encoder that is
    not trained afterwards (corpus and question encoding)."""
    if dtype is not None:
        encoder.to(dtype)
    return encoder


class _Tokenizers:
    """One tokenizer per thread: the caller's for the first thread, copies for the others."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.first, self.lock, self.local, self.given = tokenizer, threading.Lock(), threading.local(), False

    def get(self) -> PreTrainedTokenizerBase:
        tok = getattr(self.local, "tok", None)
        if tok is None:
            with self.lock:
                tok, self.given = (self.first if not self.given else copy.deepcopy(self.first)), True
            self.local.tok = tok
        return tok


@dataclass
class _Block:
    """A tokenized block: `order[k]` is the input row of sorted text k; `batches[start]` the padded batch of
    `seqs[start : start + rows]` (made at the batch size of the time); `types`: the token type ids of pairs, sorted
    as `seqs` (None for single texts, or a tokenizer that makes none)."""

    order: np.ndarray
    seqs: list[list[int]]
    batches: dict[int, tuple[torch.Tensor, ...]]
    types: list[list[int]] | None = None


class _BatchRunner:
    """Runs the encoder over length-sorted token lists; halves the batch size on CUDA out-of-memory. `width`: the
    model's output columns (default the encoder's hidden size; 1 for a pair scorer)."""

    def __init__(self, encoder: Encoder | torch.nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                 device: torch.device | str, amp_dtype: torch.dtype | None, on_done: Callable[[int], None] | None,
                 width: int | None = None):
        self.encoder = encoder
        self.width = encoder.hidden_size if width is None else width
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.on_done = on_done
        self.pad_id, self.left = padding_of(tokenizer)
        self.pin = self.device.type == "cuda"

    def pad(self, seqs: list[list[int]], types: list[list[int]] | None = None) -> tuple[torch.Tensor, ...]:
        """(input_ids, attention_mask), plus the token type ids (padded with 0) when `types` is given."""
        ids, mask = pad_batch(seqs, self.pad_id, self.left, pin_memory=self.pin)
        return (ids, mask) if types is None else (ids, mask, pad_batch(types, 0, self.left, pin_memory=self.pin)[0])

    def prepare(self, seqs: list[list[int]], types: list[list[int]] | None = None) -> _Block:
        """Sort by length (longest first) and pad every batch (runs in a tokenizing thread)."""
        order = np.argsort([-len(x) for x in seqs], kind="stable")
        seqs = [seqs[i] for i in order]
        types = None if types is None else [types[i] for i in order]
        size = self.batch_size
        return _Block(order, seqs, {s: self.pad(seqs[s : s + size], _rows(types, s, size))
                                    for s in range(0, len(seqs), size)}, types)

    def _forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(self.device, self.amp_dtype):
            return self.encoder(*(t.to(self.device, non_blocking=True) for t in tensors))

    def launch(self, block: _Block) -> torch.Tensor:
        """Queue the block's batches; returns its [n, H] float32 vectors (sorted order) on the device, not waited
        for."""
        seqs = block.seqs
        with torch.inference_mode():
            out = torch.empty((len(seqs), self.width), dtype=torch.float32, device=self.device)
        start = 0
        while start < len(seqs):
            rows = min(self.batch_size, len(seqs) - start)
            made = block.batches.get(start)
            batch = (made if made is not None and len(made[0]) == rows
                     else self.pad(seqs[start : start + rows], _rows(block.types, start, rows)))
            try:
                vec = self._forward(*batch)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning("out of memory on a batch of %d texts (longest %d tokens): batch size halved to %d",
                               rows, len(seqs[start]), self.batch_size)
                continue
            with torch.inference_mode():
                out[start : start + rows] = vec
            start += rows
            if self.on_done is not None:
                self.on_done(rows)
        return out

    def run(self, seqs: list[list[int]]) -> np.ndarray:
        """Encode length-sorted `seqs` now: float32 [n, H] on the host, rows in the order given."""
        return self.launch(_Block(np.arange(len(seqs)), seqs, {})).cpu().numpy()


def _rows(types: list[list[int]] | None, start: int, rows: int) -> list[list[int]] | None:
    return None if types is None else types[start : start + rows]


def _unsorted(vectors: torch.Tensor, order: np.ndarray) -> np.ndarray:
    """Wait for a launched block and return its vectors in input order."""
    sorted_rows = vectors.cpu().numpy()
    out = np.empty_like(sorted_rows)
    out[order] = sorted_rows
    return out


def encode_stream(
    encoder: Encoder,
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str],
    kind: Kind,
    max_length: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    on_done: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield one float32 [n, H] array per block of `block_size` texts, rows in input order.

    `texts` may be a lazy iterator (a file being read, in this thread, in order): `threads` + 2 blocks are held at a
    time (threads: tokenizing threads, default `tokenize_threads(device)`; each has one block in flight).
    `on_done(n)` is called after each batch of n texts is queued (progress bars).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    tokenizers = _Tokenizers(tokenizer)
    runner = _BatchRunner(encoder, tokenizer, batch_size, device, amp_dtype, on_done)

    def prepare(block: list[str]) -> _Block:
        return runner.prepare(tokenize_ids(tokenizers.get(), encoder.settings.prepare(block, kind), max_length))

    yield from _run_blocks(encoder, runner, texts, prepare, block_size, threads or tokenize_threads(device))


def _run_blocks(model: torch.nn.Module, runner: _BatchRunner, items: Iterable, prepare: Callable[[list], _Block],
                block_size: int, threads: int) -> Iterator[np.ndarray]:
    """The block loop of encode_stream and score_pairs: `prepare` tokenizes a block of items in a pool thread while
    the model runs the previous one; yields each block's outputs in input order."""
    source = iter(items)
    was_training = model.training
    model.eval()
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize") as pool:
            pending: deque[Future] = deque()

            def refill() -> None:
                while len(pending) < threads and (block := list(islice(source, block_size))):
                    pending.append(pool.submit(prepare, block))

            try:
                refill()
                launched: tuple[torch.Tensor, np.ndarray] | None = None
                while pending:
                    block = pending.popleft().result()
                    refill()
                    vectors = runner.launch(block)
                    if launched is not None:  # the previous block's copy waits only after this one is queued
                        yield _unsorted(*launched)
                    launched = (vectors, block.order)
                if launched is not None:
                    yield _unsorted(*launched)
            finally:
                for f in pending:
                    f.cancel()
    finally:
        model.train(was_training)


PairIds = Callable[[PreTrainedTokenizerBase, list[str], list[str]], tuple[list[list[int]], list[list[int]] | None]]


def score_pairs_stream(
    scorer: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pair_ids: PairIds,
    pairs: Iterable[tuple[str, str]],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    on_done: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield one float32 [n] array of scores per block of `block_size` (question, passage) pairs, in input order.

    `pair_ids(tokenizer, questions, passages)` is the pair-tokenizing rule: unpadded token ids per pair and their
    token type ids (None when the tokenizer makes none); `scorer(input_ids, attention_mask[, token_type_ids])` gives
    one float per pair. Batches, threads, pinned memory and the halving on out-of-memory are encode_stream's.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    tokenizers = _Tokenizers(tokenizer)
    runner = _BatchRunner(_Column(scorer), tokenizer, batch_size, device, amp_dtype, on_done, width=1)

    def prepare(block: list[tuple[str, str]]) -> _Block:
        ids, types = pair_ids(tokenizers.get(), [q for q, _ in block], [p for _, p in block])
        return runner.prepare(ids, types)

    for out in _run_blocks(scorer, runner, pairs, prepare, block_size, threads or tokenize_threads(device)):
        yield out[:, 0]


class _Column(torch.nn.Module):
    """A pair scorer's [B] output as the [B, 1] column the batch runner fills."""

    def __init__(self, scorer: torch.nn.Module):
        super().__init__()
        self.scorer = scorer

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.scorer(*tensors).float().reshape(-1, 1)


def score_pairs(
    scorer: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pair_ids: PairIds,
    pairs: list[tuple[str, str]],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """float32 [N] scores of (question, passage) pairs in input order (see score_pairs_stream)."""
    with tqdm(total=len(pairs), disable=not progress, desc="score pairs", unit="pair", smoothing=0.05) as bar:
        blocks = list(score_pairs_stream(scorer, tokenizer, pair_ids, pairs, batch_size, device, amp_dtype,
                                         on_done=bar.update))
    if not blocks:
        return np.empty((0,), dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def encode_texts(
    encoder: Encoder,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    kind: Kind,
    max_length: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Encode `texts` (prefix/lowercase from the encoder's settings) to a float32 [N, H] array in input order."""
    with tqdm(total=len(texts), disable=not progress, desc=f"encode {kind}", unit=kind, smoothing=0.05) as bar:
        blocks = list(encode_stream(encoder, tokenizer, texts, kind, max_length, batch_size, device, amp_dtype,
                                    on_done=bar.update))
    if not blocks:
        return np.empty((0, encoder.hidden_size), dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
