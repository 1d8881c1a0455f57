import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_prints_official_json(tmp_path, capsys):
    ref = tmp_path / "dev.json"
    ref.write_text("\n".join(json.dumps({"question_id": q, "question": "?", "answer_paragraphs":
                                         [{"paragraph_id": p, "paragraph_text": "t"}]})
                             for q, p in [("q1", "a"), ("q2", "b")]) + "\n")
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"q1": ["x", "a"], "q2": ["b", "b"]}))
    load_script("evaluate_dureader").main([str(ref), str(pred)])
    out = capsys.readouterr().out.strip()
    assert list(json.loads(out)) == ["MRR@10", "QueriesRanked", "recall@1", "recall@50"]
    assert json.loads(out) == {"MRR@10": 0.75, "QueriesRanked": 2, "recall@1": 0.5, "recall@50": 1.0}
    with pytest.raises(SystemExit, match="multiple times"):
        load_script("evaluate_dureader").main([str(ref), str(pred), "--strict"])
