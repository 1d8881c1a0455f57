"""The precision policy: fp16 on CUDA, bf16 where the CPU runs it fast, fp32 otherwise (`--precision auto`)."""
from __future__ import annotations

import contextlib
import functools
import logging
from contextlib import AbstractContextManager as ContextManager

import torch

logger = logging.getLogger(__name__)


@functools.cache
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


PRECISION_MODES = ("auto", "fp16", "bf16", "fp32")


def resolve_amp_dtype(device: torch.device | str, mode: str = "auto") -> torch.dtype | None:
    """The autocast dtype for precision `mode` on `device`, or None for fp32. The one precision policy of every script.

    auto: fp16 on CUDA, bf16 on a CPU that runs it fast (AMX/AVX512-BF16), fp32 otherwise. fp16/bf16/fp32 force one;
    `fp16` on a machine without CUDA falls back (one warning) to bf16 where the CPU runs it fast, else fp32, so the
    reference command's `--fp16` runs anywhere.
    """
    if mode not in PRECISION_MODES:
        raise ValueError(f"precision must be one of {PRECISION_MODES}, not {mode!r}")
    device = torch.device(device)
    if mode == "fp32":
        return None
    if device.type == "cuda":
        if mode == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError("--bf16 asked for, but this GPU does not support bf16; use --fp16")
        return torch.bfloat16 if mode == "bf16" else torch.float16
    if cpu_has_fast_bf16():
        if mode == "fp16":
            _warn_once("--fp16 needs a CUDA GPU; none found, so using bf16 autocast on this CPU (AMX/AVX512-BF16).")
        return torch.bfloat16
    if mode != "auto":
        _warn_once(f"--{mode} asked for, but there is no CUDA GPU and this CPU has no fast bf16 "
                   "(AMX/AVX512-BF16): running in fp32.")
    return None


def dtype_name(dtype: torch.dtype | None) -> str:
    """'fp16', 'bf16' or 'fp32' for an autocast dtype (None = fp32), for logs and saved configs."""
    return {torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32"}[dtype]


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> ContextManager:
    """torch.autocast for `dtype` on `device`, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def scale_tensor(scaler: torch.amp.GradScaler) -> torch.Tensor:
    """A GradScaler's current scale as a tensor on its device, without the device wait of `get_scale()` (read it
    with the step's other values)."""
    get = getattr(scaler, "_get_scale_async", None)  # torch's own non-waiting accessor (2.x)
    scale = get() if get is not None and scaler.is_enabled() else None
    return scale if scale is not None else torch.tensor(scaler.get_scale())
