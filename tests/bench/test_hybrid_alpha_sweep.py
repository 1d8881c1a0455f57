"""The alpha sweep recomputes each alpha's ranking from one hybrid rerank file."""
import json

import pytest

from bench.hybrid_alpha_sweep import main
from tests.data_scripts import ROOT  # noqa: F401  (puts the repository on sys.path like the other script tests)


def write_inputs(tmp_path):
    # q1: dense finds the gold g1 first, BM25 third; q2: BM25 finds g2 first, dense second
    rerank = [
        {"question_id": "q1", "question": "?", "passages": [
            {"passage_id": "g1", "dense_score": 0.9, "bm25_score": 5.0},
            {"passage_id": "x", "dense_score": 0.8, "bm25_score": 9.0},
            {"passage_id": "y", "dense_score": None, "bm25_score": 7.0},
            {"passage_id": "z", "dense_score": 0.1, "bm25_score": 1.0}]},
        {"question_id": "q2", "question": "?", "passages": [
            {"passage_id": "g2", "dense_score": 0.7, "bm25_score": 8.0},
            {"passage_id": "u", "dense_score": 0.9, "bm25_score": 2.0},
            {"passage_id": "v", "dense_score": 0.2, "bm25_score": None},
            {"passage_id": "w", "dense_score": None, "bm25_score": 1.0}]}]
    rr = tmp_path / "res.rerank.jsonl"
    rr.write_text("".join(json.dumps(r) + "\n" for r in rerank), encoding="utf-8")
    qa = tmp_path / "qa.json"
    qa.write_text("".join(json.dumps({"question_id": q, "question": "问题", "answer_paragraphs": [
        {"paragraph_id": g, "paragraph_text": "文"}]}, ensure_ascii=False) + "\n" for q, g in (("q1", "g1"), ("q2", "g2"))),
        encoding="utf-8")
    return rr, qa


def test_sweep_rows(tmp_path, capsys):
    rr, qa = write_inputs(tmp_path)
    rows = {r["ranking"]: r for r in main(["--rerank_file", str(rr), "--qa_file", str(qa), "--alphas", "0", "0.5", "1"])}
    assert rows["BM25"]["MRR@10"] == pytest.approx((1 / 3 + 1) / 2)
    assert rows["dense"]["MRR@10"] == pytest.approx((1 + 1 / 2) / 2)
    assert rows["convex alpha 0.00"]["MRR@10"] == rows["BM25"]["MRR@10"]
    assert rows["convex alpha 1.00"]["MRR@10"] == rows["dense"]["MRR@10"]
    # alpha 0.5 (BM25 lists of 4 and 3 < depth 100: scaled against 0), q1: g1 = .5*1 + .5*5/9 = .78, x = .5*.875 +
    # .5*1 = .9375 -> g1 second; q2: g2 = .5*.714 + .5*1 = .86 > u = .5*1 + .5*2/8 = .625 -> first
    assert rows["convex alpha 0.50"]["MRR@10"] == pytest.approx((1 / 2 + 1) / 2)
    out = capsys.readouterr().out
    assert "best MRR@10" in out and "2 with a BM25 list shorter than --depth 100" in out
    main(["--rerank_file", str(rr), "--qa_file", str(qa), "--alphas", "0", "1", "--json_out",
          str(tmp_path / "sweep.json")])
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["bm25_lists_below_depth"] == 2
    assert saved["best_alpha"] == 1 and [r["ranking"] for r in saved["rows"]][2:] == [
        "convex alpha 0.00", "convex alpha 1.00"]  # dense alone (0.75) beats BM25 alone (0.67)
    rrf = main(["--rerank_file", str(rr), "--qa_file", str(qa), "--alphas", "0.5", "--fusion", "rrf"])
    assert rrf[-1]["ranking"] == "rrf alpha 0.50"
    # q1: g1 1/61 + 1/63 < x 1/62 + 1/61 -> g1 second; q2: g2 1/62 + 1/61 ties u 1/61 + 1/62 -> u (higher dense)
    assert rrf[-1]["MRR@10"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    shallow = main(["--rerank_file", str(rr), "--qa_file", str(qa), "--alphas", "0", "--depth", "1"])
    # depth 1: q1 fuses g1 (dense top) with x (BM25 top): x first at alpha 0, g1 second
    assert shallow[-1]["MRR@10"] == pytest.approx((1 / 2 + 1) / 2)


def test_a_dense_only_rerank_file_is_refused(tmp_path):
    rr, qa = write_inputs(tmp_path)
    rr.write_text(json.dumps({"question_id": "q1", "question": "?", "passages": [{"passage_id": "g1", "score": 1}]})
                  + "\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="dense_retriever.py --hybrid_alpha"):
        main(["--rerank_file", str(rr), "--qa_file", str(qa)])
