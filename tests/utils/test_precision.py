import argparse
import logging

import pytest
import torch

from dpr.options import add_precision_args
from dpr.utils import precision


def test_fp16_on_cpu_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert precision.resolve_amp_dtype("cpu", "fp16") is None
        assert precision.resolve_amp_dtype("cpu", "fp16") is None
    assert len([r for r in caplog.records if "fp16" in r.getMessage()]) == 1


def test_fp16_on_cpu_uses_bf16_where_fast(monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert precision.resolve_amp_dtype("cpu", "fp16") is torch.bfloat16
    assert precision.resolve_amp_dtype("cpu", "bf16") is torch.bfloat16


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_auto_and_fp32_on_cpu(monkeypatch, caplog, fast_bf16):
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast_bf16)
    with caplog.at_level(logging.WARNING):
        assert precision.resolve_amp_dtype("cpu", "auto") is (torch.bfloat16 if fast_bf16 else None)
        assert precision.resolve_amp_dtype("cpu", "fp32") is None
    assert not caplog.records  # auto and fp32 are never a fallback worth a warning


def test_auto_on_cuda_is_fp16_and_fp32_forces_fp32():
    # device.type only: no GPU is needed to resolve the policy for a CUDA device
    assert precision.resolve_amp_dtype("cuda", "auto") is torch.float16
    assert precision.resolve_amp_dtype("cuda", "fp16") is torch.float16
    assert precision.resolve_amp_dtype("cuda", "fp32") is None


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="precision"):
        precision.resolve_amp_dtype("cpu", "fp8")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_precision_args(p)
    return p


@pytest.mark.parametrize("argv, mode", [([], "auto"), (["--fp16"], "fp16"), (["--bf16"], "bf16"), (["--fp32"], "fp32"),
                                        (["--precision", "fp32"], "fp32"), (["--precision", "bf16"], "bf16")])
def test_flags_resolve_to_one_mode(argv, mode):
    assert _parser().parse_args(argv).precision == mode


@pytest.mark.parametrize("argv", [["--fp16", "--bf16"], ["--fp16", "--fp32"], ["--precision", "fp32", "--fp16"]])
def test_precision_flags_are_exclusive(argv, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(argv)
    assert "not allowed with" in capsys.readouterr().err


def test_autocast_none_is_fp32():
    with precision.autocast("cpu", None):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
