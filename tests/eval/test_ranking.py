"""nDCG@k and recall@k against hand-computed values."""
import math

import pytest

from dpr.eval.ranking import extra_metrics, ndcg_at_k, recall_at_k


def test_ndcg_hand_computed():
    reference = {"q1": {"a"}, "q2": {"a", "b"}, "q3": {"z"}}
    predictions = {"q1": ["x", "a", "y"],          # 1/log2(3) / 1
                   "q2": ["b", "x", "x", "a"],     # (1 + 1/log2(5)) / (1 + 1/log2(3)); "x" twice changes nothing
                   "extra": ["a"]}                 # q3 missing: 0; a question outside the reference: ignored
    q1 = 1 / math.log2(3)
    q2 = (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(reference, predictions, 10) == pytest.approx((q1 + q2 + 0) / 3)
    # the cut-off: with k=3 q2's "a" at rank 4 no longer counts
    assert ndcg_at_k(reference, predictions, 3) == pytest.approx((q1 + 1 / (1 + 1 / math.log2(3))) / 3)
    # a passage ranked twice counts once; a perfect ranking scores 1
    assert ndcg_at_k({"q": {"a"}}, {"q": ["a", "a"]}, 10) == 1.0
    assert ndcg_at_k({"q": {"a", "b"}}, {"q": ["b", "a"]}, 10) == pytest.approx(1.0)


def test_recall_hand_computed():
    reference = {"q1": {"a", "b", "c", "d"}, "q2": {"e"}}
    predictions = {"q1": ["a", "x", "c", "a", "b"], "q2": ["x", "y"]}
    assert recall_at_k(reference, predictions, 100) == pytest.approx((3 / 4 + 0) / 2)
    assert recall_at_k(reference, predictions, 3) == pytest.approx((2 / 4) / 2)
    with pytest.raises(ValueError):
        recall_at_k({}, predictions, 10)


def test_extra_metrics_leave_recall_100_out_below_100_docs():
    reference, predictions = {"q": {"a"}}, {"q": ["b", "a"]}
    shallow = extra_metrics(reference, predictions, n_docs=50)
    assert shallow["recall@100"] is None and "--n_docs 100" in shallow["note"]
    assert shallow["nDCG@10"] == pytest.approx(1 / math.log2(3))
    deep = extra_metrics(reference, predictions, n_docs=100)
    assert deep["recall@100"] == 1.0 and "note" not in deep and deep["n_docs"] == 100
