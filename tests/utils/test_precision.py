import logging

import pytest
import torch

from dpr.utils import precision


def test_fp16_on_cpu_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert precision.resolve_amp_dtype("cpu", fp16=True) is None
        assert precision.resolve_amp_dtype("cpu", fp16=True) is None
    assert len([r for r in caplog.records if "fp16" in r.getMessage()]) == 1


def test_fp16_on_cpu_uses_bf16_where_fast(monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert precision.resolve_amp_dtype("cpu", fp16=True) is torch.bfloat16
    assert precision.resolve_amp_dtype("cpu", bf16=True) is torch.bfloat16
    assert precision.resolve_amp_dtype("cpu") is None


def test_exclusive_flags():
    with pytest.raises(ValueError, match="exclusive"):
        precision.resolve_amp_dtype("cpu", fp16=True, bf16=True)


def test_autocast_none_is_fp32():
    with precision.autocast("cpu", None):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
