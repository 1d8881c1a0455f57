"""Mixed precision choices: fp16 on CUDA, bf16 where the hardware runs it fast, fp32 otherwise."""
from __future__ import annotations

import contextlib
import functools
import logging
from typing import ContextManager

import torch

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX512-BF16 (bf16 autocast is then faster than fp32, not slower)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        logger.warning(msg)


def resolve_amp_dtype(device: torch.device | str, fp16: bool = False, bf16: bool = False) -> torch.dtype | None:
    """The autocast dtype for these flags on this device, or None for fp32.

    `--fp16` on a machine without CUDA falls back (one warning) to bf16 where the CPU runs it fast, else fp32,
    so the seed's command runs anywhere.
    """
    device = torch.device(device)
    if fp16 and bf16:
        raise ValueError("--fp16 and --bf16 are exclusive")
    if device.type == "cuda":
        if bf16 and not torch.cuda.is_bf16_supported():
            raise ValueError("--bf16 asked for, but this GPU does not support bf16; use --fp16")
        return torch.float16 if fp16 else torch.bfloat16 if bf16 else None
    if fp16 or bf16:
        if cpu_has_fast_bf16():
            if fp16:
                _warn_once("--fp16 needs a CUDA GPU; none found, so using bf16 autocast on this CPU (AMX/AVX512-BF16).")
            return torch.bfloat16
        _warn_once(
            f"--{'fp16' if fp16 else 'bf16'} asked for, but there is no CUDA GPU and this CPU has no fast bf16 "
            "(AMX/AVX512-BF16): running in fp32."
        )
    return None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> ContextManager:
    """torch.autocast for `dtype` on `device`, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
