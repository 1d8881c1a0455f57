"""The GPU check must not rot between GPU sessions: run it at toy sizes on the CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_tiny_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--steps", "1"],
                         capture_output=True, text=True, timeout=300, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    report = json.loads(out[out.rfind("\n{\n") + 1 :])
    assert [r["cached"] for r in report["cached_vs_uncached"]] == [False, True]
    assert all(r["padded"] for r in report["cached_vs_uncached"] + report["grad_agreement"])
    assert report["seed_shape_steps"][0]["batch"] == 16 and report["seed_shape_steps"][0]["s_per_step"] > 0
    enc = report["encoding"]
    assert enc["passages_per_s"] > 0 and enc["startup_s"] > 0 and enc["block_size"] < enc["passages"]
    check = report["encoding_check"][0]
    assert check["ok"] and check["rows_nearest_own_reference"] == check["passages"] == 64
    assert check["threads8_equal_threads1"] and check["max_1_minus_cos"] <= 1e-3
    rr = report["reranker_scoring"]
    assert rr["pairs_per_s"] > 0 and rr["batch"] == 128 and rr["max_abs_diff_vs_fp32"] < 1e-4  # CPU: fp32 both
    assert report["reranker"]["train_pairs_per_s"] > 0 and report["reranker"]["reranker_precision"] == "fp32"
    fp32 = [r for r in report["grad_agreement"] if r["dtype"] == "fp32"][0]
    assert fp32["cached_vs_uncached_rel_err"] < 1e-5  # dropout on: the CPU RNG replay makes them agree
    assert report["resume_checks"] == {"device_seed_kept_after_dropout_check": True,
                                       "fused_adamw_resumed_plain_state_fp16_step": True,
                                       "step_on_param_device_fp32": True}


def test_steps_run_the_trainers_update_with_the_fused_optimizer(monkeypatch):
    """time_steps builds the project's optimizer (fused AdamW) and updates through the trainer's apply_update."""
    import torch

    from dpr.training import trainer

    mod = _module()
    built, updates = [], []
    real_build, real_update = trainer.build_optimizer, trainer.apply_update
    monkeypatch.setattr(mod, "build_optimizer", lambda *a: built.append(real_build(*a)) or built[-1])
    monkeypatch.setattr(mod, "apply_update", lambda *a: updates.append(a[1].is_enabled()) or real_update(*a))
    enc, _ = mod.build_encoder(True, torch.device("cpu"))
    mod.time_steps(enc, 4, 8, 16, 2, 4, None, True, 1, torch.device("cpu"))
    assert len(built) == 1 and built[0].defaults.get("fused") and updates == [False, False]


@pytest.mark.parametrize("plant", [None, "no_wait", "stale", "unordered"])
def test_encoding_check_catches_an_unsynchronised_or_out_of_order_read(monkeypatch, plant):
    """The CPU stand-in for CUDA's asynchronous copy (tests/host_waits.py): the copy lands only at the wait. A read
    without the wait (zeros), a host buffer shared by blocks (stale rows) or rows left sorted fail the check."""
    import torch

    from tests.host_waits import DeferredCopies

    mod = _module()
    enc, tok = mod.build_encoder(True, torch.device("cpu"))
    DeferredCopies(monkeypatch, plant=plant)
    (r,) = mod.encoding_check(enc, tok, [torch.bfloat16], torch.device("cpu"), 64, 24)
    assert r["ok"] == (plant is None), r
    if plant is not None:
        assert r["rows_nearest_own_reference"] < 64 or r["max_1_minus_cos"] > 1e-3


def test_faiss_part_with_the_gpu_stand_in(monkeypatch, capsys):
    """The FAISS section runs the project's GPU index paths (faiss's GPU functions stood in for on CPU)."""
    import importlib.util

    import torch

    from tests.index.fake_gpu import FakeGpu

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    gpu = FakeGpu(monkeypatch)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (1 << 30, 2 << 30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    out = mod.faiss_gpu_search(3000, 768, 20)["faiss_gpu"]
    assert out["flat_fp32"]["recall@50_vs_flat_fp32"] == 1.0 and out["flat_fp32"]["on_gpu"]
    ivf = [v for k, v in out.items() if k.startswith("IVF")][0]
    assert ivf["on_gpu"] and 0 < ivf["recall@50_vs_flat_fp32"] <= 1
    assert {c["fp16"] for c in gpu.clones if c["kind"].startswith("IndexFlat") and c["ntotal"]} == {False, True}


def test_missing_faiss_is_one_line(monkeypatch, capsys):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert mod.faiss_gpu_search(10, 8, 2)["faiss"].startswith("skipped")
    assert capsys.readouterr().out.count("\n") == 1
