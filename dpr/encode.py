"""The one encoding routine: length-sorted batches, input order restored, autocast. Used by validation,
corpus encoding and question encoding, and (generalised to pairs: `score_pairs`) by the cross-encoder's scoring.

Texts are processed in blocks. Tokenization is off the critical path: while the model encodes one block, a pool of
threads tokenizes, length-sorts and pads the next ones (fast tokenizers release the GIL; each thread has its own
tokenizer, as a fast tokenizer must not be called from two threads at once); on CUDA several blocks are in flight
and the padded batches sit in pinned host memory, copied without blocking. Within a block, batches are formed from
length-sorted texts (longest first, so an out-of-memory shows up on the first batch) and padded only to their own
longest member: the block (--block_size texts) is the unit of length bucketing. At the end of its launch a block's
vectors are copied to pinned host memory without blocking and an event is recorded; the host waits on that event
only after the next block's batches are queued, so the device never idles behind the host's un-sorting and writing.
Host waits: one per block (the event), none per batch when the batch has no padding (the model gets no mask) and one
per padded batch (transformers' SDPA path tests `mask.all()` on the device). On CUDA out-of-memory the batch size is
halved and encoding continues.

Pairs (question, passage) go through the same pipeline (`score_pairs`): blocks, threads, sorting, pinned batches
and halving; a pair's token ids (and its token type ids, where the tokenizer makes them) are sorted and padded
together, and the model gives one float per pair instead of a vector.
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
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from dpr.models.cross_encoder import CrossEncoder, PairScorer, pair_ids
from dpr.models.encoder import Encoder, Kind
from dpr.models.tokens import model_mask, pad_batch, padding_of, tokenize_ids
from dpr.utils.precision import autocast

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 8192
T = TypeVar("T")


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
    `seqs[start : start + rows]` (made at the batch size of the time)."""

    order: np.ndarray
    seqs: list[list[int]]
    batches: dict[int, tuple[torch.Tensor, ...]]
    types: list[list[int]] | None = None  # token type ids of pairs, sorted as seqs (None: single texts / none made)


@dataclass
class _Launched:
    """A launched block: `host` receives its [n, H] vectors (sorted order) by a copy that is complete once `ready`
    (a CUDA event recorded after the copy; None on CPU, where the copy is done already) has been waited for."""

    host: torch.Tensor
    ready: torch.cuda.Event | None
    order: np.ndarray


class BlockRunner(Protocol):
    """What `stream_blocks` drives: `launch` queues a prepared block's work without waiting for it; `wait` waits for
    that block alone and returns its float32 [n, H] rows in input order."""

    def launch(self, block: Any) -> Any: ...

    def wait(self, launched: Any) -> np.ndarray: ...


class _BatchRunner:
    """Runs the encoder over a block's length-sorted batches; halves the batch size on CUDA out-of-memory. `width`:
    the model's output columns (default the encoder's hidden size; 1 for a pair scorer)."""

    def __init__(self, encoder: Encoder | torch.nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                 device: torch.device | str, amp_dtype: torch.dtype | None, on_done: Callable[[int], None] | None,
                 width: int | None = None):
        self.encoder = encoder
        self.width = width  # None: the encoder's hidden size (read at launch; a prepare-only runner has no model)
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
        order = np.argsort(-np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs)), kind="stable")
        seqs = [seqs[i] for i in order]
        types = None if types is None else [types[i] for i in order]
        size = self.batch_size
        return _Block(order, seqs, {s: self.pad(seqs[s : s + size], _rows(types, s, size))
                                    for s in range(0, len(seqs), size)}, types)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        mask = model_mask(mask)  # host-side: an unpadded batch gives the model no mask to test on the device
        with torch.inference_mode(), autocast(self.device, self.amp_dtype):
            return self.encoder(ids.to(self.device, non_blocking=True),
                                None if mask is None else mask.to(self.device, non_blocking=True),
                                *(t.to(self.device, non_blocking=True) for t in rest))

    def _to_host(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Issue the copy of a block's vectors to pinned host memory without waiting; the event marks its end."""
        if self.device.type != "cuda":
            return vectors, None
        with torch.inference_mode():
            host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
            host.copy_(vectors, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return host, ready

    def launch(self, block: _Block) -> _Launched:
        """Queue the block's batches and the copy of its vectors to the host; nothing is waited for."""
        seqs = block.seqs
        with torch.inference_mode():
            width = self.encoder.hidden_size if self.width is None else self.width
            out = torch.empty((len(seqs), width), dtype=torch.float32, device=self.device)
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
        return _Launched(*self._to_host(out), block.order)

    def wait(self, launched: _Launched) -> np.ndarray:
        """Wait for this block's copy (its event, not the whole stream) and return its rows in input order."""
        if launched.ready is not None:
            launched.ready.synchronize()
        sorted_rows = launched.host.numpy()
        out = np.empty_like(sorted_rows)
        out[launched.order] = sorted_rows
        return out


def _rows(types: list[list[int]] | None, start: int, rows: int) -> list[list[int]] | None:
    return None if types is None else types[start : start + rows]


def stream_blocks(items: Iterable[T], prepare: Callable[[list[T]], Any], runner: BlockRunner, block_size: int,
                  threads: int) -> Iterator[np.ndarray]:
    """The block pipeline: `prepare` (tokenize, sort, pad) runs in `threads` threads, blocks are launched in order,
    and block k is waited for only after block k+1 is launched (its copy is then behind nothing but its own work).

    Block 0 is submitted alone (it gets every core, so the device starts sooner); after each launch the pool is
    refilled to `threads` + 1 blocks, so `threads` blocks are tokenizing while the model runs (on CPU the launch
    is the model run). `items` is read in this thread, in order, after the launch.
    """
    source = iter(items)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize") as pool:
        pending: deque[Future] = deque()

        def refill(limit: int) -> None:
            while len(pending) < limit and (block := list(islice(source, block_size))):
                pending.append(pool.submit(prepare, block))

        try:
            refill(1)
            launched = None
            while pending:
                current = runner.launch(pending.popleft().result())
                refill(threads + 1)
                if launched is not None:
                    yield runner.wait(launched)
                launched = current
            if launched is not None:
                yield runner.wait(launched)
        finally:
            for f in pending:
                f.cancel()


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

    `texts` may be a lazy iterator (a file being read, in this thread, in order): up to `threads` + 3 blocks are
    held at a time (threads: tokenizing threads, default `tokenize_threads(device)`; see `stream_blocks`).
    `on_done(n)` is called after each batch of n texts is queued (progress bars).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    threads = threads or tokenize_threads(device)
    tokenizers = _Tokenizers(tokenizer)
    runner = _BatchRunner(encoder, tokenizer, batch_size, device, amp_dtype, on_done)

    def prepare(block: list[str]) -> _Block:
        return runner.prepare(tokenize_ids(tokenizers.get(), encoder.settings.prepare(block, kind), max_length))

    was_training = encoder.training
    encoder.eval()
    try:
        yield from stream_blocks(texts, prepare, runner, block_size, threads)
    finally:
        encoder.train(was_training)


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


PairIds = Callable[[PreTrainedTokenizerBase, list[str], list[str]], tuple[list[list[int]], list[list[int]] | None]]


class _Column(torch.nn.Module):
    """A pair scorer's [B] output as the [B, 1] column the batch runner fills."""

    def __init__(self, scorer: torch.nn.Module):
        super().__init__()
        self.scorer = scorer

    def forward(self, *tensors: torch.Tensor | None) -> torch.Tensor:
        return self.scorer(*tensors).float().reshape(-1, 1)


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
    token type ids (None when the tokenizer makes none); `scorer(input_ids, attention_mask or None[,
    token_type_ids])` gives one float per pair. Blocks, threads, pinned memory, copies and the halving on
    out-of-memory are encode_stream's (`stream_blocks`).
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

    was_training = scorer.training
    scorer.eval()
    try:
        for out in stream_blocks(pairs, prepare, runner, block_size, threads or tokenize_threads(device)):
            yield out[:, 0]
    finally:
        scorer.train(was_training)


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


def score_cross_encoder(
    ce: CrossEncoder,
    questions: list[str],
    passages: list[str],
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """float32 logits of (questions[i], passages[i]) by a cross-encoder with its own pair settings: the one scoring
    path of step 4's Reranker and the reranker trainer's validation. Scores in eval mode; afterwards the model is in
    train mode (the fresh PairScorer's), so a caller that trains restores its own mode (the trainer does)."""
    if len(questions) != len(passages):
        raise ValueError(f"{len(questions)} questions but {len(passages)} passages")

    def ids(tokenizer: PreTrainedTokenizerBase, qs: list[str], ps: list[str]):
        return pair_ids(tokenizer, ce.settings, qs, ps)

    return score_pairs(PairScorer(ce.model), ce.tokenizer, ids, list(zip(questions, passages)), batch_size, device,
                       amp_dtype, progress=progress)
