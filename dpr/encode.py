"""The one encoding routine: length-sorted batches, input order restored, autocast. Used by validation,
corpus encoding and question encoding.

Texts are processed in blocks: while the model encodes one block, a background thread prepares and tokenizes the
next (fast tokenizers release the GIL), so tokenization overlaps the model. Within a block, batches are formed from
length-sorted texts (longest first, so an out-of-memory shows up on the first batch) and padded only to their own
longest member. On CUDA out-of-memory the batch size is halved and encoding continues.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from dpr.models.encoder import Encoder, Kind
from dpr.models.tokens import pad_batch, padding_of, tokenize_ids  # noqa: F401 (tokenize_ids: re-exported)
from dpr.utils.precision import autocast

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 8192


class _BatchRunner:
    """Runs the encoder over length-sorted token lists; halves the batch size on CUDA out-of-memory."""

    def __init__(self, encoder: Encoder, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                 device: torch.device | str, amp_dtype: torch.dtype | None, on_done: Callable[[int], None] | None):
        self.encoder = encoder
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self.on_done = on_done
        self.pad_id, self.left = padding_of(tokenizer)

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        ids, mask = pad_batch(seqs, self.pad_id, self.left)
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            vec = self.encoder(ids.to(self.device), mask.to(self.device))
        return vec.float().cpu().numpy()

    def run(self, seqs: list[list[int]]) -> np.ndarray:
        out = np.empty((len(seqs), self.encoder.hidden_size), dtype=np.float32)
        start = 0
        while start < len(seqs):
            chunk = seqs[start : start + self.batch_size]
            try:
                out[start : start + len(chunk)] = self._forward(chunk)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning("out of memory on a batch of %d texts (longest %d tokens): batch size halved to %d",
                               len(chunk), max(len(s) for s in chunk), self.batch_size)
                continue
            start += len(chunk)
            if self.on_done is not None:
                self.on_done(len(chunk))
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
) -> Iterator[np.ndarray]:
    """Yield one float32 [n, H] array per block of `block_size` texts, rows in input order.

    `texts` may be a lazy iterator (a file being read): at most two blocks are held at a time. `on_done(n)` is
    called after each batch of n texts (progress bars).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    source = iter(texts)

    def next_block() -> list[list[int]] | None:
        block = list(islice(source, block_size))
        if not block:
            return None
        return tokenize_ids(tokenizer, encoder.settings.prepare(block, kind), max_length)

    runner = _BatchRunner(encoder, tokenizer, batch_size, device, amp_dtype, on_done)
    was_training = encoder.training
    encoder.eval()
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
            pending: Future = pool.submit(next_block)
            while (ids := pending.result()) is not None:
                pending = pool.submit(next_block)
                order = np.argsort([-len(x) for x in ids], kind="stable")
                vectors = runner.run([ids[i] for i in order])
                out = np.empty_like(vectors)
                out[order] = vectors
                yield out
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
