"""The one encoding routine: length-sorted batches, input order restored, autocast. Used by validation,
corpus encoding and question encoding."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from dpr.models.encoder import Encoder, Kind
from dpr.utils.precision import autocast


@torch.no_grad()
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
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    prepared = encoder.settings.prepare(texts, kind)
    ids = tokenizer(prepared, max_length=max_length, truncation=True, add_special_tokens=True)["input_ids"]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    out = np.empty((len(texts), encoder.hidden_size), dtype=np.float32)
    was_training = encoder.training
    encoder.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc=f"encode {kind}", unit="batch"):
            idx = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, padding="longest", return_tensors="pt")
            with autocast(device, amp_dtype):
                vec = encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            out[idx] = vec.float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return out
