import random

import pytest

from dpr.retrieval.hybrid import FusionConfig, fuse, minmax

DENSE = [("a", 0.9), ("b", 0.7), ("c", 0.5)]        # normalised: a 1, b 0.5, c 0
BM25 = [("c", 20.0), ("d", 15.0), ("a", 10.0)]      # normalised: c 1, d 0.5, a 0


def pids(hits):
    return [h.pid for h in hits]


def test_minmax():
    assert minmax([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    # all equal (one score included): every entry sits at the minimum, worth what absence is worth
    assert minmax([4.0, 4.0]) == [0.0, 0.0] and minmax([7.0]) == [0.0] and minmax([]) == []


def test_toy_case_computed_by_hand():
    # alpha 0.6: a = .6*1 + .4*0 = .6; b = .6*.5 + 0 (missing from BM25) = .3; c = 0 + .4*1 = .4; d = 0 + .4*.5 = .2
    hits = fuse(DENSE, BM25, FusionConfig(alpha=0.6))
    assert pids(hits) == ["a", "c", "b", "d"]
    assert [h.score for h in hits] == pytest.approx([0.6, 0.4, 0.3, 0.2])
    # alpha 0.3: a = .3; b = .15; c = .7; d = .35
    hits = fuse(DENSE, BM25, FusionConfig(alpha=0.3))
    assert pids(hits) == ["c", "d", "a", "b"]
    assert [h.score for h in hits] == pytest.approx([0.7, 0.35, 0.3, 0.15])


def test_raw_scores_kept_and_missing_side_is_none():
    hits = {h.pid: h for h in fuse(DENSE, BM25, FusionConfig(alpha=0.5))}
    assert (hits["a"].dense_score, hits["a"].bm25_score) == (0.9, 10.0)
    assert (hits["b"].dense_score, hits["b"].bm25_score) == (0.7, None)
    assert (hits["d"].dense_score, hits["d"].bm25_score) == (None, 15.0)


def test_missing_from_one_list_takes_that_lists_minimum():
    # d is missing from the dense list: it scores exactly like a dense passage at the dense minimum (c, 0.5)
    with_d = fuse(DENSE + [("d", 0.5)], BM25, FusionConfig(alpha=0.4))
    without_d = fuse(DENSE, BM25, FusionConfig(alpha=0.4))
    assert {h.pid: h.score for h in with_d}["d"] == pytest.approx({h.pid: h.score for h in without_d}["d"])
    # one side empty (BM25 found no shared word): the dense order, scaled by alpha
    hits = fuse(DENSE, [], FusionConfig(alpha=0.7))
    assert pids(hits) == ["a", "b", "c"] and [h.score for h in hits] == pytest.approx([0.7, 0.35, 0.0])


def test_lone_bm25_hit_ranks_below_the_top_dense_hit():
    # BM25 found one passage (z), absent from the dense list. alpha 0.3: a = .3*1 = .3; b = .3*.5 = .15; c = .3*0 = 0;
    # z = .7*0 = 0 (a lone hit sits at its list's minimum); c and z tie at 0, both dense 0: by presence, z .7 > c .3.
    # (With all-equal -> 1, z scored .7 and came first.)
    hits = fuse(DENSE, [("z", 12.0)], FusionConfig(alpha=0.3))
    assert pids(hits) == ["a", "b", "z", "c"]
    assert [h.score for h in hits] == pytest.approx([0.3, 0.15, 0.0, 0.0])
    assert hits[2].bm25_score == 12.0 and hits[2].dense_score is None  # its raw score is still reported


def test_a_list_of_equal_scores_adds_nothing_beyond_presence():
    # a lone BM25 hit that is also in the dense list (b): the fused order is the dense order, scores alpha * dense'
    hits = fuse(DENSE, [("b", 12.0)], FusionConfig(alpha=0.3))
    assert pids(hits) == ["a", "b", "c"] and [h.score for h in hits] == pytest.approx([0.3, 0.15, 0.0])
    # several equal BM25 scores: the same as the BM25 side being absent, whatever alpha
    for alpha in (0.1, 0.3, 0.9):
        tied = fuse(DENSE, [("c", 5.0), ("d", 5.0), ("a", 5.0)], FusionConfig(alpha=alpha))
        alone = fuse(DENSE, [], FusionConfig(alpha=alpha))
        assert {h.pid: h.score for h in tied} == {**{h.pid: h.score for h in alone}, "d": 0.0}
        # among the passages at 0 (c: dense minimum and in BM25, d: BM25 only) presence decides: c 1 > d 1 - alpha
        assert pids(tied) == ["a", "b", "c", "d"]
    # equal dense scores: x = .5*0 + .5*0 = 0 (x is the BM25 minimum); y = 0 (missing from BM25); z = .5*1 = .5;
    # x (in both lists, presence 1) before y (dense only, .5)
    hits = fuse([("x", 3.0), ("y", 3.0)], [("z", 1.0), ("x", 0.0)], FusionConfig(alpha=0.5))
    assert pids(hits) == ["z", "x", "y"] and [h.score for h in hits] == pytest.approx([0.5, 0.0, 0.0])
    # both lists single hits (depth 1): all fused scores 0; presence picks the heavier side's hit
    assert pids(fuse(DENSE, BM25, FusionConfig(alpha=0.2, depth=1))) == ["c", "a"]
    assert pids(fuse(DENSE, BM25, FusionConfig(alpha=0.8, depth=1))) == ["a", "c"]


def test_no_list_lifts_a_passage_by_more_than_its_spread_shows():
    # a two-score list still ranks (its top is 1, its other 0); only the spread earns credit, never mere presence
    hits = {h.pid: h.score for h in fuse(DENSE, [("z", 12.0), ("y", 11.0)], FusionConfig(alpha=0.3))}
    assert hits == pytest.approx({"a": 0.3, "b": 0.15, "c": 0.0, "z": 0.7, "y": 0.0})


def test_ties_broken_by_dense_score_then_presence_then_id():
    hits = fuse([("x", 2.0), ("y", 1.0)], [("y", 5.0), ("x", 1.0)], FusionConfig(alpha=0.5))
    assert [h.score for h in hits] == [0.5, 0.5] and pids(hits) == ["x", "y"]  # x has the higher dense score
    hits = fuse([("n", 1.0), ("m", 1.0)], [], FusionConfig(alpha=0.5))
    assert pids(hits) == ["m", "n"]  # same fused and dense score and presence: by id
    # e and f tie at 0 with dense 0 (e is the dense minimum, f missing): f's BM25 presence (.7) beats e's dense (.3)
    hits = fuse([("g", 2.0), ("e", 1.0)], [("g", 3.0), ("f", 1.0)], FusionConfig(alpha=0.3))
    assert pids(hits) == ["g", "f", "e"]


def random_lists(seed):
    rng = random.Random(seed)
    ids = [f"p{i:02d}" for i in range(40)]
    dense = sorted(((p, rng.random()) for p in rng.sample(ids, 15)), key=lambda h: -h[1])
    bm25 = sorted(((p, rng.uniform(1, 30)) for p in rng.sample(ids, 15)), key=lambda h: -h[1])
    return dense, bm25


@pytest.mark.parametrize("seed", range(5))
def test_alpha_zero_is_bm25_order_and_alpha_one_is_dense_order(seed):
    dense, bm25 = random_lists(seed)
    for alpha, side, other in ((0.0, bm25, dense), (1.0, dense, bm25)):
        hits = pids(fuse(dense, bm25, FusionConfig(alpha=alpha)))
        order = [p for p, _ in side]
        # every passage of that side above its minimum keeps its rank; the minimum (normalised 0) ties with the
        # other side's extras, which follow in dense order
        assert hits[:len(order) - 1] == order[:-1]
        assert [p for p in hits if p in dict(side)] == order
        assert set(hits) == set(order) | {p for p, _ in other}


def test_depth_cuts_both_lists():
    hits = fuse(DENSE, BM25, FusionConfig(alpha=0.5, depth=1))
    assert pids(hits) == ["a", "c"]  # only the top of each list (each alone: 0; equal presence: by id)


def test_rrf():
    # a: 1/61 + 1/63, c: 1/63 + 1/61 (tie: a has the higher dense score), b: 1/62, d: 1/62 (tie: b has a dense score)
    hits = fuse(DENSE, BM25, FusionConfig(alpha=0.5, method="rrf"))
    assert pids(hits) == ["a", "c", "b", "d"]
    assert [h.score for h in hits] == pytest.approx([1 / 61 + 1 / 63] * 2 + [1 / 62] * 2)
    # alpha weights the two sides: at 1 only dense ranks count, so b (dense rank 2) beats c (dense rank 3)
    hits = fuse(DENSE, BM25, FusionConfig(alpha=1.0, method="rrf"))
    assert pids(hits) == ["a", "b", "c", "d"] and hits[1].score == pytest.approx(2 / 62)
    assert fuse(DENSE, BM25, FusionConfig(alpha=0.5, method="rrf", rrf_k=0))[0].score == pytest.approx(1 + 1 / 3)


def test_bad_config_and_duplicates():
    for bad in (dict(alpha=1.5), dict(method="max"), dict(depth=0)):
        with pytest.raises(ValueError):
            FusionConfig(**bad)
    with pytest.raises(ValueError, match="twice"):
        fuse([("a", 1.0), ("a", 0.5)], [])
