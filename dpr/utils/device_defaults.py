"""Defaults chosen for the device when the user leaves a flag unset: gradient-cache chunk sizes, encoding batch and
DataLoader workers. Explicit values always win. On CPU the defaults are the flags' historical values (16 / 8
questions / passages per chunk, 128 texts per encoding batch, 2 workers), so CPU runs are unchanged; on CUDA they
are sized from the card's memory and the model's shape (a conservative activation estimate, see `train_bytes_per_token`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch

CPU_Q_CHUNK, CPU_CTX_CHUNK, CPU_ENCODE_BATCH, CPU_WORKERS = 16, 8, 128, 2
TRAIN_MEMORY_SHARE = 0.4   # of the card, for one chunk's activations (weights, Adam moments, cached reps: the rest)
ENCODE_MEMORY_SHARE = 0.25  # of the card, for one encoding batch's live buffers
MAX_ENCODE_BATCH = 1024    # GEMMs are saturated long before this; bigger only delays the first OOM retry


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelShape:
        """From an Encoder's (or HF model's) config."""
        config = getattr(model, "model", model).config
        return cls(int(config.hidden_size), int(config.num_hidden_layers), int(config.num_attention_heads))


@dataclass(frozen=True)
class DeviceDefaults:
    q_chunk_size: int
    ctx_chunk_size: int
    encode_batch: int
    num_workers: int


def _pow2_floor(n: float) -> int:
    return 1 << max(0, int(n).bit_length() - 1) if n >= 1 else 1


def train_bytes_per_token(shape: ModelShape, seq_len: int) -> int:
    """Activation bytes a token keeps for backward under half-precision autocast: 34 x hidden per layer (the
    transformer block's tensors) + 5 x heads x seq_len (attention scores, probabilities and their dropout mask,
    materialised while attention dropout is on)."""
    return shape.layers * (34 * shape.hidden + 5 * shape.heads * seq_len)


def encode_bytes_per_token(shape: ModelShape, seq_len: int) -> int:
    """Live bytes a token needs in an inference forward (two of: the FFN's 4 x hidden half-precision intermediate,
    one head-batch of attention scores)."""
    return 2 * 2 * (4 * shape.hidden + shape.heads * seq_len)


def _chunk(budget: float, per_item: int, most: int) -> int:
    """Largest power of two (at least 8) of items within the budget, capped at `most` (a whole side: one chunk)."""
    return max(1, min(most, max(8, _pow2_floor(budget / per_item))))


def device_defaults(device: torch.device | str, shape: ModelShape, q_len: int, p_len: int, per_rank_batch: int,
                    passages_per_question: int, memory_bytes: int | None = None, cpu_count: int | None = None,
                    local_ranks: int = 1) -> DeviceDefaults:
    """The defaults for `device` (CPU: the historical flag defaults; CUDA: sized from `memory_bytes`, the card's
    total memory unless given, and `cpu_count` cores shared by `local_ranks` processes)."""
    device = torch.device(device)
    if device.type != "cuda":
        return DeviceDefaults(CPU_Q_CHUNK, CPU_CTX_CHUNK, CPU_ENCODE_BATCH, CPU_WORKERS)
    if memory_bytes is None:
        memory_bytes = torch.cuda.get_device_properties(device).total_memory
    cpus = cpu_count or os.cpu_count() or 2
    train = TRAIN_MEMORY_SHARE * memory_bytes
    q_chunk = _chunk(train, q_len * train_bytes_per_token(shape, q_len), per_rank_batch)
    ctx_chunk = _chunk(train, p_len * train_bytes_per_token(shape, p_len), per_rank_batch * passages_per_question)
    batch = min(MAX_ENCODE_BATCH, _pow2_floor(ENCODE_MEMORY_SHARE * memory_bytes / (p_len * encode_bytes_per_token(shape, p_len))))
    workers = max(2, min(8, cpus // (2 * max(1, local_ranks))))
    return DeviceDefaults(q_chunk, ctx_chunk, max(8, batch), workers)


def resolve(explicit: dict[str, int | None], defaults: DeviceDefaults) -> tuple[dict[str, int], list[str]]:
    """`explicit` (flag name -> value or None when unset) with every None replaced by the device default of that
    name; also returns the names that were filled in (for the log)."""
    known = {f.name for f in fields(DeviceDefaults)}
    out, filled = {}, []
    for name, value in explicit.items():
        if name not in known:
            raise KeyError(f"no device default for {name}")
        if value is None:
            out[name], filled = getattr(defaults, name), filled + [name]
        else:
            out[name] = value
    return out, filled
