import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpr.retrieval.hybrid import FusionConfig, absent_score, fuse, scale

DENSE = [("a", 0.9), ("b", 0.7), ("c", 0.5)]        # min-max: a 1, b 0.5, c 0
BM25 = [("c", 20.0), ("d", 15.0), ("a", 10.0)]      # exhaustive (3 < depth 100), s / max: c 1, d .75, a .5
CUT = FusionConfig(alpha=0.6, depth=3)              # both lists as deep as the depth: cut, min-max: c 1, d .5, a 0


def pids(hits):
    return [h.pid for h in hits]


def scores(hits):
    return {h.pid: h.score for h in hits}


def test_scale_against_the_floor_or_the_minimum():
    assert scale([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]                         # floor None: min-max
    assert scale([4.0, 4.0]) == [0.0, 0.0] and scale([7.0]) == [0.0] and scale([]) == []
    assert scale([8.0, 2.0], 0.0) == [1.0, 0.25] and scale([7.0], 0.0) == [1.0] and scale([5.0, 5.0], 0.0) == [1, 1]
    # a list shorter than its depth is exhaustive (missing passages score 0); one as deep as it may have been cut
    assert absent_score([("a", 1.0)], 100) == 0.0 and absent_score([("a", 1.0)] * 3, 3) is None


def test_toy_case_computed_by_hand():
    # exhaustive BM25 (c 1, d .75, a .5). alpha 0.5: a = .5*1 + .5*.5 = .75; b = .5*.5 = .25 (missing from BM25: 0);
    # c = .5*0 + .5*1 = .5; d = .5*.75 = .375 (missing from dense)
    hits = fuse(DENSE, BM25, FusionConfig(alpha=0.5))
    assert pids(hits) == ["a", "c", "d", "b"]
    assert [h.score for h in hits] == pytest.approx([0.75, 0.5, 0.375, 0.25])
    # alpha 0.3: a = .3 + .7*.5 = .65; b = .15; c = .7; d = .7*.75 = .525
    hits = fuse(DENSE, BM25, FusionConfig(alpha=0.3))
    assert pids(hits) == ["c", "a", "d", "b"]
    assert [h.score for h in hits] == pytest.approx([0.7, 0.65, 0.525, 0.15])


def test_a_cut_list_uses_its_own_minimum():
    # depth 3: the BM25 list fills it, so it may have been cut (c 1, d .5, a 0, min-max). alpha 0.6: a = .6*1 + 0 =
    # .6; b = .3; c = .4*1 = .4; d = .4*.5 = .2
    hits = fuse(DENSE, BM25, CUT)
    assert pids(hits) == ["a", "c", "b", "d"]
    assert [h.score for h in hits] == pytest.approx([0.6, 0.4, 0.3, 0.2])
    # a longer list cut to depth 2 (c, d): c 1, d 0; dense a 1, b 0. alpha .3: c .7, a .3, then b, d at 0 (both dense
    # 0, b the dense minimum, d missing): presence d .7 > b .3
    hits = fuse(DENSE, BM25, FusionConfig(alpha=0.3, depth=2))
    assert pids(hits) == ["c", "a", "d", "b"] and [h.score for h in hits] == pytest.approx([0.7, 0.3, 0.0, 0.0])
    # a cut list of equal scores ranks nothing above anything: it adds 0, its members win ties only
    hits = fuse(DENSE, [("c", 5.0), ("d", 5.0)], FusionConfig(alpha=0.3, depth=2))
    assert scores(hits) == pytest.approx({"a": 0.3, "b": 0.0, "c": 0.0, "d": 0.0})


def test_a_lone_bm25_hit_gets_the_whole_bm25_weight():
    # BM25 found one passage (z), absent from the dense list: every other passage scores 0 in BM25, so z is worth
    # 1 - alpha: z = .7*12/12 = .7; a = .3; b = .15; c = 0
    hits = fuse(DENSE, [("z", 12.0)], FusionConfig(alpha=0.3))
    assert pids(hits) == ["z", "a", "b", "c"]
    assert [h.score for h in hits] == pytest.approx([0.7, 0.3, 0.15, 0.0])
    assert hits[0].bm25_score == 12.0 and hits[0].dense_score is None  # its raw score is still reported
    # a lone hit that is also in the dense list (c, the dense minimum): c = 0 + .7 = .7
    assert pids(fuse(DENSE, [("c", 12.0)], FusionConfig(alpha=0.3))) == ["c", "a", "b"]


def test_tied_bm25_hits_get_the_whole_bm25_weight():
    # c and d tie at 5 (both 1): c = .3*0 + .7 = .7, d = .7; a = .3, b = .15; c before d by presence (1 > .7)
    hits = fuse(DENSE, [("c", 5.0), ("d", 5.0)], FusionConfig(alpha=0.3))
    assert pids(hits) == ["c", "d", "a", "b"]
    assert [h.score for h in hits] == pytest.approx([0.7, 0.7, 0.3, 0.15])


def test_one_strong_and_one_weak_bm25_hit():
    # z 12 -> 1, y 3 -> .25 (against 0, not against y itself): z = .7, y = .7*.25 = .175; a .3, b .15, c 0
    hits = fuse(DENSE, [("z", 12.0), ("y", 3.0)], FusionConfig(alpha=0.3))
    assert pids(hits) == ["z", "a", "y", "b", "c"]
    assert [h.score for h in hits] == pytest.approx([0.7, 0.3, 0.175, 0.15, 0.0])


def test_a_lone_hit_beside_100_dense_hits_ranks_as_with_a_weaker_second_hit():
    # the case: 100 dense hits, alpha 0.3. A lone BM25 hit ranked 100th (worth absence) and a much weaker
    # second hit lifted it to 1st; now it is 1st either way
    dense = [(f"d{i:03d}", 1.0 - i / 100) for i in range(100)]
    alone = pids(fuse(dense, [("z", 9.0)], FusionConfig(alpha=0.3)))
    with_weak = pids(fuse(dense, [("z", 9.0), ("w", 0.1)], FusionConfig(alpha=0.3)))
    assert alone[0] == "z" and with_weak[0] == "z"
    assert [p for p in with_weak if p != "w"] == alone


def test_missing_from_one_list_takes_that_lists_minimum():
    # d is missing from the dense list: it scores exactly like a dense passage at the dense minimum (c, 0.5)
    with_d = fuse(DENSE + [("d", 0.5)], BM25, FusionConfig(alpha=0.4))
    without_d = fuse(DENSE, BM25, FusionConfig(alpha=0.4))
    assert scores(with_d)["d"] == pytest.approx(scores(without_d)["d"])
    # one side empty (BM25 found no shared word): the dense order, scaled by alpha
    hits = fuse(DENSE, [], FusionConfig(alpha=0.7))
    assert pids(hits) == ["a", "b", "c"] and [h.score for h in hits] == pytest.approx([0.7, 0.35, 0.0])


def test_depth_one_lists_are_cut():
    # both lists cut at depth 1 (each alone: 0): presence picks the heavier side's hit
    assert pids(fuse(DENSE, BM25, FusionConfig(alpha=0.2, depth=1))) == ["c", "a"]
    assert pids(fuse(DENSE, BM25, FusionConfig(alpha=0.8, depth=1))) == ["a", "c"]


def test_ties_broken_by_dense_score_then_presence_then_id():
    hits = fuse([("x", 2.0), ("y", 1.0)], [("y", 5.0), ("x", 1.0)], FusionConfig(alpha=0.5, depth=2))
    assert [h.score for h in hits] == [0.5, 0.5] and pids(hits) == ["x", "y"]  # x has the higher dense score
    hits = fuse([("n", 1.0), ("m", 1.0)], [], FusionConfig(alpha=0.5))
    assert pids(hits) == ["m", "n"]  # same fused and dense score and presence: by id
    # e and f tie at 0 with dense 0 (e is the dense minimum, f the cut BM25 minimum): f's presence (.7) beats e's (.3)
    hits = fuse([("g", 2.0), ("e", 1.0)], [("g", 3.0), ("f", 1.0)], FusionConfig(alpha=0.3, depth=2))
    assert pids(hits) == ["g", "f", "e"]


HIT_IDS = st.sampled_from([f"p{i:02d}" for i in range(30)])


@settings(max_examples=300, deadline=None)
@given(dense=st.dictionaries(HIT_IDS, st.floats(-1, 1), max_size=12),
       bm25=st.dictionaries(HIT_IDS, st.floats(0.01, 50), min_size=1, max_size=12),
       new=HIT_IDS, fraction=st.floats(0, 1), alpha=st.floats(0, 1), extra_depth=st.integers(2, 5))
def test_adding_a_weaker_hit_to_an_exhaustive_list_never_reorders_the_others(dense, bm25, new, fraction, alpha,
                                                                             extra_depth):
    bm25.pop(new, None)
    if not bm25:
        return
    d = sorted(dense.items(), key=lambda h: -h[1])
    b = sorted(bm25.items(), key=lambda h: -h[1])
    weaker = sorted([*b, (new, max(bm25.values()) * fraction)], key=lambda h: -h[1])
    config = FusionConfig(alpha=alpha, depth=len(weaker) + extra_depth - 1)  # both lists below the depth
    before = pids(fuse(d, b, config))
    after = pids(fuse(d, weaker, config))
    assert [p for p in after if p != new] == [p for p in before if p != new]


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
        # every passage of that side keeps its rank (the dense minimum, scaled 0, ties with the BM25 extras; the
        # exhaustive BM25 list, scaled against 0, ranks every one of its passages first)
        if side is bm25:
            assert hits[:len(order)] == order
        else:
            assert hits[:len(order) - 1] == order[:-1]
        assert [p for p in hits if p in dict(side)] == order
        assert set(hits) == set(order) | {p for p, _ in other}


def test_depth_cuts_both_lists():
    hits = fuse(DENSE, BM25, FusionConfig(alpha=0.5, depth=1))
    assert pids(hits) == ["a", "c"]  # only the top of each list (each alone and cut: 0; equal presence: by id)


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
