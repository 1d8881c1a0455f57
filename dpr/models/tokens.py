"""The one way texts become model inputs: token ids (special tokens, truncated), then padding of a batch to its own
longest member on the side the tokenizer pads. Training chunks, corpus/question encoding and tests all use these."""
from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase


def tokenize_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids (special tokens included, truncated to max_length), unpadded."""
    if not texts:
        return []
    return tokenizer(texts, max_length=max_length, truncation=True, add_special_tokens=True,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def padding_of(tokenizer: PreTrainedTokenizerBase) -> tuple[int, bool]:
    """(pad id, pads on the left) of a tokenizer."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return pad_id, getattr(tokenizer, "padding_side", "right") == "left"


def pad_batch(seqs: list[list[int]], pad_id: int, left: bool = False,
              pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) int64 tensors padded to the longest sequence of `seqs` (in pinned host memory
    when `pin_memory`: a CUDA copy from there need not block)."""
    width = max(len(s) for s in seqs)
    ids_t = torch.full((len(seqs), width), pad_id, dtype=torch.int64, pin_memory=pin_memory)
    mask_t = torch.zeros((len(seqs), width), dtype=torch.int64, pin_memory=pin_memory)
    ids, mask = ids_t.numpy(), mask_t.numpy()
    for row, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = seq
        mask[row, cols] = 1
    return ids_t, mask_t


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenize and pad to the longest text of this list (max_length is a cap, not a target)."""
    pad_id, left = padding_of(tokenizer)
    ids, mask = pad_batch(tokenize_ids(tokenizer, texts, max_length), pad_id, left)
    return {"input_ids": ids, "attention_mask": mask}
