"""The GPU check must not rot between GPU sessions: run it at toy sizes on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_tiny_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--steps", "1"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    report = json.loads(out[out.rfind("\n{\n") + 1 :])
    assert [r["cached"] for r in report["cached_vs_uncached"]] == [False, True]
    assert report["seed_shape_steps"][0]["batch"] == 16 and report["seed_shape_steps"][0]["s_per_step"] > 0
    assert report["encoding"]["passages_per_s"] > 0
    assert report["reranker"]["train_pairs_per_s"] > 0 and report["reranker"]["reranker_precision"] == "fp32"
    fp32 = [r for r in report["grad_agreement"] if r["dtype"] == "fp32"][0]
    assert fp32["cached_vs_uncached_rel_err"] < 1e-5  # dropout on: the CPU RNG replay makes them agree


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
