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
