"""bench/bench_tokenize.py at toy size: before and after give identical tensors and every timing is reported."""
import json
import subprocess
import sys
from pathlib import Path

from tests.tiny_encoder import random_passages, save_tiny_biencoder

ROOT = Path(__file__).resolve().parents[2]


def test_tokenize_bench_runs_and_reports_before_and_after(tmp_path):
    model = save_tiny_biencoder(tmp_path / "m") / "passage_encoder"
    tsv = tmp_path / "passages.tsv"
    tsv.write_text("id\ttext\ttitle\n" + "".join(f"{pid}\t{text}\t\n" for pid, text in random_passages(40)),
                   encoding="utf-8")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_tokenize.py"), "--model", str(model), "--ctx_file",
                        str(tsv), "--block_size", "16", "--batch_size", "4", "--rounds", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["passages"] == 40 and summary["rounds"] == 2 and "cpu_flags" in summary
    for key in ("tokenizer_before_s", "prepare_before_s", "tokenizer_after_s", "prepare_after_s", "threads2_before_s",
                "threads2_after_s"):
        assert summary[key] > 0, key
