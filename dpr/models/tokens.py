"""The one way texts become model inputs: token ids (special tokens, truncated), then padding of a batch to its own
longest member on the side the tokenizer pads. Training chunks, corpus/question encoding and tests all use these."""
from __future__ import annotations

from itertools import chain

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase


def _called(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, max_length=max_length, truncation=True, add_special_tokens=True,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def tokenize_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids (special tokens included, truncated to max_length), unpadded.

    A fast tokenizer's Rust backend is called directly for the ids (what the tokenizer's own call runs, without its
    per-text Python conversion, which holds the GIL for ~15% of the time): the call on the first two texts sets the
    backend's truncation exactly as the full call would and must give the same ids, else the tokenizer's call is
    used for all.
    """
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return _called(tokenizer, texts, max_length)
    sample = _called(tokenizer, texts[:2], max_length)
    ids = [e.ids for e in backend.encode_batch(texts, add_special_tokens=True)]
    return ids if ids[: len(sample)] == sample else _called(tokenizer, texts, max_length)


def padding_of(tokenizer: PreTrainedTokenizerBase) -> tuple[int, bool]:
    """(pad id, pads on the left) of a tokenizer."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pad_id, getattr(tokenizer, "padding_side", "right") == "left"


def pad_batch(seqs: list[list[int]], pad_id: int, left: bool = False,
              pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) int64 tensors padded to the longest sequence of `seqs` (in pinned host memory
    when `pin_memory`: a CUDA copy from there need not block). Vectorised: one numpy scatter, no per-row loop (the
    tokenizing threads then spend their time in the tokenizer, which releases the GIL)."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    width = int(lengths.max())
    ids_t = torch.full((len(seqs), width), pad_id, dtype=torch.int64, pin_memory=pin_memory)
    mask_t = torch.zeros((len(seqs), width), dtype=torch.int64, pin_memory=pin_memory)
    ids, mask = ids_t.numpy(), mask_t.numpy()
    cols = np.arange(width)
    real = cols >= (width - lengths)[:, None] if left else cols < lengths[:, None]
    ids[real] = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    mask[real] = 1
    return ids_t, mask_t


def model_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask to hand the model: None when this host-side mask has no padding. Read on the host before
    the batch is copied (no device wait); a model given None skips its own `mask.all()` test, a device-to-host wait
    in every forward (transformers 5.x, SDPA)."""
    return None if mask.numpy().all() else mask


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize and pad to the longest text of this list (max_length is a cap, not a target)."""
    pad_id, left = padding_of(tokenizer)
    ids, mask = pad_batch(tokenize_ids(tokenizer, texts, max_length), pad_id, left)
    return {"input_ids": ids, "attention_mask": mask}
