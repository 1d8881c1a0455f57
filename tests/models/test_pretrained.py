"""Registry: name resolution, build-once caching, atomic and concurrent builds, the offline CLI."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dpr.models import pretrained
from dpr.models.pretrained import Entry, ensure_built, missing_model_message, resolve_model_path


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    """A registry entry whose build writes two files slowly and counts its calls."""
    calls = []

    def build(out: Path) -> dict:
        calls.append(out)
        (out / "config.json").write_text("{}")
        time.sleep(0.2)
        (out / "model.safetensors").write_text("weights")
        return {"source": "test"}

    monkeypatch.setenv("DPR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(pretrained.REGISTRY, "fake-model", Entry(build, version=1, description="test"))
    return calls


def test_cache_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("DPR_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pretrained.cache_dir() == tmp_path / ".cache" / "dureader-dpr"
    monkeypatch.setenv("DPR_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert pretrained.cache_dir() == tmp_path / "elsewhere"


def test_resolve(fake_registry, tmp_path):
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve_model_path(str(local)) == str(local)
    assert resolve_model_path("hfl/chinese-macbert-base") == "hfl/chinese-macbert-base"
    assert resolve_model_path("fake-model") == str(tmp_path / "cache" / "fake-model")
    assert fake_registry  # built on first use


def test_built_once_and_rebuilt_when_outdated(fake_registry, monkeypatch, tmp_path):
    first = ensure_built("fake-model")
    assert ensure_built("fake-model") == first and len(fake_registry) == 1
    assert (first / "model.safetensors").read_text() == "weights"
    entry = pretrained.REGISTRY["fake-model"]
    monkeypatch.setitem(pretrained.REGISTRY, "fake-model", Entry(entry.build, version=2, description="test"))
    assert ensure_built("fake-model") == first and len(fake_registry) == 2
    assert [p.name for p in first.parent.iterdir()] == ["fake-model"]  # no temp or stale dirs left


def test_failed_build_leaves_nothing(monkeypatch, tmp_path):
    def broken(out: Path) -> dict:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setenv("DPR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(pretrained.REGISTRY, "broken", Entry(broken, version=1, description="test"))
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_built("broken")
    assert list((tmp_path / "cache").iterdir()) == []


def test_concurrent_builders(fake_registry, tmp_path):
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_built("fake-model"))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1
    target = results[0]
    assert (target / "model.safetensors").read_text() == "weights"
    assert [p.name for p in target.parent.iterdir()] == ["fake-model"]


def test_missing_model_message():
    msg = missing_model_message("hfl/chinese-macbert-base")
    assert "hfl/chinese-macbert-base" in msg and "--pretrained_model_cfg" in msg and "multilingual-e5-small" in msg
    assert "no such directory" in missing_model_message("/data/models/macbert")


def test_cli_built_offline_into_fresh_cache(e5_dir):
    """The session fixture ran `python -m dpr.models.pretrained` with HF_HUB_OFFLINE=1 on an empty cache dir."""
    assert (e5_dir / "model.safetensors").stat().st_size > 400_000_000
    assert pretrained._built_version(e5_dir) == pretrained.REGISTRY["multilingual-e5-small"].version
