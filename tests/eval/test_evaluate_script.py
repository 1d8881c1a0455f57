import json

import pytest

from tests.data_scripts import load_script


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
