"""bench/gpu_bench.sh must not rot between GPU sessions: the whole run at toy sizes on the CPU, the per-section cap
with the JSON written as it goes, and the tokenizer export that lets the e5 part travel to a device."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_run_writes_every_section(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_bench.sh"), "--tiny"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    sections = [k for k, v in report.items() if isinstance(v, dict) and "section_s" in v]
    assert not [k for k in sections if "error" in report[k]], {k: report[k] for k in sections}
    for kind in ("bert_base", "e5_small"):
        assert report[f"{kind}_encode_model"]["real_tokens_per_s"] > 0
        e2e = report[f"{kind}_encode_e2e"]
        assert 0 < e2e["fraction_of_model_only"] and e2e["startup_s"] > 0 and e2e["steady_s"] > 0
        assert e2e["block_size"] * 4 <= e2e["passages"]  # a steady rate over the blocks after the first
        assert report[f"{kind}_loader"]["batches_per_s"] > 0
        assert report[f"{kind}_device_defaults"]["q_chunk_size"] == 16  # CPU: the historical defaults
    assert report["bert_base_train_ref_chunks_512_64"]["towers"] == 2
    assert report["e5_small_train_recipe_b128_device_chunks"]["towers"] == 1
    assert report["peak"]["tflops"] > 0 and "flop_rule" in report
    assert report["dtype"] == "fp32"  # --precision auto on an AVX2-only CPU (fp16 + GradScaler on CUDA)
    assert all(t["value"] is not None for t in report["targets"].values())
    assert "stand" in report["e5_small_model"]  # no --tokenizer_dir: the stand-in is named


def test_a_section_past_its_cap_is_recorded_and_the_json_is_already_written(tmp_path):
    mod = _module()
    report = mod.Report(tmp_path / "r.json", {"device": "cpu"})
    report.section("fast", 5, lambda deadline: {"x": 1})
    report.section("slow", 0.2, lambda deadline: time.sleep(5) or {"x": 2})
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["fast"]["x"] == 1 and written["slow"]["error"].startswith("cap of")
    assert written["slow"]["section_s"] < 5  # cut off, not waited for
    report.section("broken", 5, lambda deadline: 1 / 0)
    assert "ZeroDivisionError" in json.loads((tmp_path / "r.json").read_text())["broken"]["error"]


def test_exported_tokenizer_drives_the_e5_part(tmp_path, monkeypatch):
    """--export_tokenizer copies the tokenizer, config and settings; --tokenizer_dir then builds the model from them
    (a tiny BERT directory stands in for the converted e5-small here)."""
    from dpr.models import pretrained
    from tests.tiny_encoder import save_tiny_biencoder

    source = save_tiny_biencoder(tmp_path / "src") / "passage_encoder"
    monkeypatch.setattr(pretrained, "resolve_model_path", lambda name: str(source))
    mod = _module()
    assert mod.main(["--export_tokenizer", str(tmp_path / "tok")]) == 0
    assert {"tokenizer.json", "config.json", "dpr_encoder.json"} <= {p.name for p in (tmp_path / "tok").iterdir()}
    assert mod.main(["--tiny", "--tokenizer_dir", str(tmp_path / "tok"), "--only", "e5_small_encode",
                     "--json_out", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert "XLM-R tokenizer" in report["e5_small_model"] and report["e5_small_encode_e2e"]["passages"] == 64


def test_precision_goes_through_the_projects_policy(tmp_path, monkeypatch):
    """--precision auto is dpr.utils.precision's choice for the device (here a CPU said to run bf16 fast), and an
    explicit mode is taken as given."""
    from dpr.utils import precision

    mod = _module()
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    for mode, want in (("auto", "bf16"), ("fp32", "fp32")):
        out = tmp_path / f"{mode}.json"
        assert mod.main(["--tiny", "--precision", mode, "--only", "nothing", "--json_out", str(out)]) == 0
        report = json.loads(out.read_text())
        assert report["dtype"] == want and report["peak"]["dtype"] == want


def test_scripts_run_with_python3_only(tmp_path):
    """The device image may have python3 and no python: both scripts fall back to it."""
    import shutil
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    for tool in ("dirname", "timeout", "tee", "bash", "env"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir), "OUT": str(tmp_path), "HOME": os.environ.get("HOME", "/root")}
    for script in ("gpu_bench.sh", "gpu_check.sh"):
        r = subprocess.run([str(bin_dir / "bash"), str(ROOT / "bench" / script), "--help"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert "usage:" in r.stdout + r.stderr, (script, r.stdout[-500:], r.stderr[-1500:])  # gpu_check tees to stderr
        assert "python: command not found" not in r.stderr
