"""bench/reranker_scoring.py at toy size (a tiny reranker, a few CMRC pairs): one row per precision x batch."""
import importlib.util
import sys

import pytest

from tests.data_scripts import ROOT
from tests.tiny_reranker import save_tiny_reranker


def test_reranker_scoring_bench_rows(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("reranker_scoring", ROOT / "bench" / "reranker_scoring.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("reranker_scoring", mod)
    spec.loader.exec_module(mod)
    from dpr.data.cmrc import default_cmrc_dir

    cmrc = default_cmrc_dir(ROOT) / "cmrc2018_dev.json"
    if not cmrc.is_file():
        pytest.skip(f"CMRC2018 not found at {cmrc}")
    pairs = mod.cmrc_pairs(cmrc, 12)
    assert len(pairs) == 12 and all(q and p for q, p in pairs)
    rows = mod.main(["--reranker", str(save_tiny_reranker(tmp_path)), "--pairs", "12", "--rounds", "1",
                     "--batch_sizes", "4,8", "--precisions", "fp32"])
    assert [(r["precision"], r["batch"]) for r in rows] == [("fp32", 4), ("fp32", 8)]
    assert all(r["pairs_per_s_median"] > 0 for r in rows)
    assert '"pairs": 12' in capsys.readouterr().out
