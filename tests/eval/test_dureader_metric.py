import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpr.eval.dureader import evaluate, find_duplicates, load_predictions, load_reference
from dpr.utils.io import InputError


def official(reference, predictions):
    """The official algorithm step by step: pad to 50 with 0, MRR over the first 10, hit sets, / len(reference)."""
    mrr, top1, top50 = 0.0, set(), set()
    matched = 0
    for qid, pids in predictions.items():
        if qid not in reference:
            continue
        matched += 1
        cand = [0] * 50
        for i, pid in enumerate(pids[:50]):
            cand[i] = pid
        for i in range(10):
            if cand[i] in reference[qid]:
                mrr += 1 / (i + 1)
                break
        for i, pid in enumerate(cand):
            if pid in reference[qid]:
                top50.add(qid)
                if i == 0:
                    top1.add(qid)
                break
    assert matched
    n = len(reference)
    return {"MRR@10": mrr / n, "recall@1": len(top1) / n, "recall@50": len(top50) / n,
            "QueriesRanked": len(predictions)}


def test_hand_computed():
    ref = {"q1": {"a"}, "q2": {"b", "c"}, "q3": {"d"}, "q4": {"e"}}
    preds = {
        "q1": ["a", "x"],                       # rank 1
        "q2": ["x", "y", "c", "b"],             # first relevant at rank 3
        "q3": [f"n{i}" for i in range(11)] + ["d"],  # rank 12: outside MRR@10, inside top 50
        # q4 missing: counts 0 but stays in the denominator
        "zz": ["a"],                            # not in the reference: ignored, but ranked
    }
    m = evaluate(ref, preds)
    assert m["MRR@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@50"] == pytest.approx(3 / 4)
    assert m["QueriesRanked"] == 4
    assert set(m) == {"MRR@10", "recall@1", "recall@50", "QueriesRanked"}


def test_only_first_50_count():
    ref = {"q": {"gold"}}
    preds = {"q": [f"n{i}" for i in range(50)] + ["gold"]}
    assert evaluate(ref, preds)["recall@50"] == 0.0
    preds = {"q": [f"n{i}" for i in range(49)] + ["gold"]}
    m = evaluate(ref, preds)
    assert m["recall@50"] == 1.0 and m["MRR@10"] == 0.0


def test_duplicates_reported_and_strict(caplog):
    ref = {"q": {"g"}}
    preds = {"q": ["x", "x", "g"]}
    assert find_duplicates(preds) == {"q": ["x"]}
    with caplog.at_level("WARNING"):
        m = evaluate(ref, preds)
    assert "multiple times" in caplog.text
    assert m["MRR@10"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="QID=q, PID=x"):
        evaluate(ref, preds, strict=True)
    # a duplicate beyond rank 50 is not looked at (the official check sees the first 50 only)
    assert find_duplicates({"q": [f"n{i}" for i in range(50)] + ["n0"]}) == {}


def test_no_matching_query_is_an_error():
    with pytest.raises(ValueError, match="No matching QIDs"):
        evaluate({"q": {"a"}}, {"other": ["a"]})


def test_load_reference_merges_repeated_qids_and_names_bad_lines(tmp_path):
    p = tmp_path / "dev.json"
    lines = [{"question_id": 1, "question": "x", "answer_paragraphs": [{"paragraph_id": "a", "paragraph_text": "t"}]},
             {"question_id": 1, "question": "x", "answer_paragraphs": [{"paragraph_id": "b"}]}]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert load_reference(p) == {"1": {"a", "b"}}
    p.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"question": "no id"}) + "\n")
    with pytest.raises(InputError, match=r"dev.json:2: missing key 'question_id'"):
        load_reference(p)


def test_load_predictions_rejects_other_shapes(tmp_path):
    p = tmp_path / "pred.json"
    p.write_text(json.dumps({"q": ["a", "b"]}))
    assert load_predictions(p) == {"q": ["a", "b"]}
    p.write_text(json.dumps([["a"]]))
    with pytest.raises(InputError, match="pred.json"):
        load_predictions(p)


pids = st.sampled_from([f"p{i}" for i in range(60)])
qids = st.sampled_from([f"q{i}" for i in range(8)])
references = st.dictionaries(qids, st.sets(pids, min_size=1, max_size=3), min_size=1)
predictions = st.dictionaries(qids, st.lists(pids, max_size=70), min_size=1)


@settings(max_examples=200, deadline=None)
@given(references, predictions)
def test_matches_the_official_algorithm(ref, preds):
    if not set(ref) & set(preds):
        with pytest.raises(ValueError):
            evaluate(ref, preds)
        return
    got, want = evaluate(ref, preds), official(ref, preds)
    assert got == pytest.approx(want)
    assert 0 <= got["recall@1"] <= got["MRR@10"] <= got["recall@50"] <= 1


@settings(max_examples=100, deadline=None)
@given(references, predictions, st.lists(pids, max_size=5))
def test_unknown_queries_and_tails_change_only_queries_ranked(ref, preds, tail):
    if not set(ref) & set(preds):
        return
    base = evaluate(ref, preds)
    padded = {q: (p + [f"n{i}" for i in range(50)])[:50] + tail for q, p in preds.items()}
    padded["not-a-reference-qid"] = ["p1"]
    got = evaluate(ref, padded)
    assert got["QueriesRanked"] == base["QueriesRanked"] + 1
    assert {k: got[k] for k in ("MRR@10", "recall@1", "recall@50")} == \
        pytest.approx({k: base[k] for k in ("MRR@10", "recall@1", "recall@50")})
