"""bench/plot_results.py draws each bar from the metrics file named for it, and refuses what it cannot read."""
import json
import subprocess
import sys

import pytest

from bench.plot_results import DEMO_RUNS, main
from tests.data_scripts import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics_file(path, mrr, r1=0.5, r50=0.9):
    path.write_text(json.dumps({"MRR@10": mrr, "QueriesRanked": 10, "recall@1": r1, "recall@50": r50,
                                "extra": {"nDCG@10": 0.1}}), encoding="utf-8")
    return path


def test_each_bar_is_the_value_of_its_own_file(tmp_path, capsys):
    a, b = metrics_file(tmp_path / "a.metrics.json", 0.8627), metrics_file(tmp_path / "b.metrics.json", 0.8406, r1=0.75)
    out = tmp_path / "img" / "results.png"
    panels = main(["--out", str(out), "--panel", "dev", f"BM25={a}", f"e5 zero-shot={b}"])
    assert [(x.name, x.value) for x in panels[0].bars] == [("BM25", 0.8627), ("e5 zero-shot", 0.8406)]
    assert out.read_bytes()[:8] == PNG_MAGIC and not list(out.parent.glob(".*tmp*"))
    assert "dev: BM25 0.8627, e5 zero-shot 0.8406" in capsys.readouterr().out
    # --metric picks another key of the same files
    panels = main(["--out", str(out), "--metric", "recall@1", "--panel", "dev", f"BM25={a}", f"e5={b}"])
    assert [x.value for x in panels[0].bars] == [0.5, 0.75]


def test_demo_dir_reads_the_four_files_run_demo_writes(tmp_path):
    for (_, stem), mrr in zip(DEMO_RUNS, (0.80, 0.81, 0.82, 0.83)):
        metrics_file(tmp_path / f"{stem}.metrics.json", mrr)
    dev = metrics_file(tmp_path / "dev.metrics.json", 0.7)
    panels = main(["--out", str(tmp_path / "r.png"), "--demo_dir", str(tmp_path), "--panel", "CMRC dev", f"BM25={dev}"])
    assert [b.name for b in panels[0].bars] == ["BM25", "zero-shot", "fine-tuned", "hybrid"]
    assert [b.value for b in panels[0].bars] == [0.80, 0.81, 0.82, 0.83]
    assert panels[1].title == "CMRC dev" and panels[1].bars[0].value == 0.7
    # the same four files run_demo.sh's printed table reads (the chart and the table cannot drift apart)
    demo = (ROOT / "run_demo.sh").read_text(encoding="utf-8")
    assert all(f'f"{{d}}/{stem}.metrics.json"' in demo for _, stem in DEMO_RUNS)


@pytest.mark.parametrize("case", ["missing", "no_metric", "not_json", "no_equals"])
def test_bad_input_is_one_error_line_and_no_png(tmp_path, case):
    good = metrics_file(tmp_path / "good.metrics.json", 0.5)
    bad = tmp_path / "bad.metrics.json"
    if case == "no_metric":
        bad.write_text(json.dumps({"recall@1": 0.3}), encoding="utf-8")
    elif case == "not_json":
        bad.write_text("{", encoding="utf-8")
    pair = str(bad) if case == "no_equals" else f"bad={bad}"
    out = tmp_path / "r.png"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "plot_results.py"), "--out", str(out),
                        "--panel", "dev", f"good={good}", pair], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.metrics.json" in lines[0]
    assert not out.exists()
