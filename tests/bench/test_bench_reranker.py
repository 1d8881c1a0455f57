"""bench/bench_reranker.py runs at toy size and reports every variant it was asked for."""
import json

from bench import bench_reranker
from tests.data_scripts import ROOT  # noqa: F401  (puts the repository on sys.path like the other script tests)
from tests.training.builders import make_model_dir
from tests.training.reranker_builders import make_planted_json


def test_report_has_every_variant(tmp_path, capsys):
    model = make_model_dir(tmp_path / "m")
    data = make_planted_json(tmp_path / "t.json", 8, seed=1)
    report = bench_reranker.main(["--model", str(model), "--data", str(data), "--max_seq_length", "48",
                                  "--group_size", "3", "--questions", "2", "--repeats", "1",
                                  "--variants", "fp32,bf16_ad0"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert set(report["train_pairs_per_s"]) == set(report["score_pairs_per_s"]) == {"fp32", "bf16_ad0"}
    assert report["pairs_per_step"] == 6 and 0 < report["mean_pair_tokens"] <= 48
    assert "flags" in report["cpu"]
