"""The reranker: pair scoring through dpr.encode (batches, threads, token type ids, its own settings), the one
ordering rule, the Reranker / Retriever API, and denoising."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import generate_dense_embeddings as gen
from dpr import Hit, Reranker, Retriever
from dpr.encode import score_pairs
from dpr.models.cross_encoder import CrossEncoderSettings, PairScorer, load_cross_encoder, pair_logits, tokenize_pairs
from dpr.retrieval.mining import DROPPED_FIELD, false_negative_probability, with_denoised_negatives
from dpr.retrieval.reranker import rerank_lists
from dpr.utils.io import InputError
from tests.tiny_encoder import random_passages, save_tiny_biencoder, write_passages_tsv
from tests.tiny_reranker import save_tiny_reranker

QUESTION = "的一是在不了有和人"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rr")
    passages = random_passages(24, seed=3)
    ctx = write_passages_tsv(root / "passages.tsv", passages)
    model = save_tiny_biencoder(root / "model")
    assert gen.main(["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(root / "emb" / "emb"),
                     "--p_sequence_length", "64", "--fp32"]) == 0
    return {"root": root, "passages": passages, "ctx": ctx, "model": model, "emb": root / "emb",
            "reranker": save_tiny_reranker(root)}


def direct_logits(path, questions, passages, settings=None):
    """The cross-encoder's logits computed by hand: its pair rule and forward, one batch, no dpr.encode."""
    ce = load_cross_encoder(path)
    if settings is not None:
        ce = dataclasses.replace(ce, settings=settings)
    with torch.no_grad():
        return pair_logits(ce.model, tokenize_pairs(ce, questions, passages)).numpy()


# ----- the ordering rule -----

def test_rerank_lists_orders_the_depth_and_keeps_the_rest_below_in_first_stage_order():
    pids = ["a", "b", "c", "d", "e", "f"]
    first = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    parts = [{"dense_score": s} for s in first]
    new_pids, scores, new_parts = rerank_lists(pids, first, parts, [1.0, 3.0, 2.0], k=5)
    assert new_pids == ["b", "c", "a", "d", "e"]
    assert scores == [3.0, 2.0, 1.0, 0.0, -1.0]  # min(reranked) - 1, - 2: below every reranked score, decreasing
    assert [p["reranker_score"] for p in new_parts] == [3.0, 2.0, 1.0, None, None]
    assert [p["first_stage_score"] for p in new_parts] == [0.8, 0.7, 0.9, 0.6, 0.5]
    assert [p["dense_score"] for p in new_parts] == [0.8, 0.7, 0.9, 0.6, 0.5]  # the first stage's parts kept
    # ties keep the first-stage order; a depth of the whole list leaves nothing below
    assert rerank_lists(pids[:3], first[:3], None, [5.0, 5.0, 7.0], k=3)[0] == ["c", "a", "b"]
    with pytest.raises(ValueError):
        rerank_lists(pids[:2], first[:2], None, [1.0, 2.0, 3.0], k=3)


# ----- pair scoring -----

def test_scores_equal_the_cross_encoders_own_forward_for_every_batch_size(world, monkeypatch):
    texts = [t for _, t in world["passages"]]
    expected = direct_logits(world["reranker"], [QUESTION] * len(texts), texts)
    calls = []
    forward = PairScorer.forward

    def counting(self, ids, mask, types=None):
        calls.append((ids.shape[0], types is not None))
        return forward(self, ids, mask, types)

    monkeypatch.setattr(PairScorer, "forward", counting)
    for batch in (1, 5, 128):
        calls.clear()
        got = Reranker.load(world["reranker"], batch_size=batch, precision="fp32").score(QUESTION, texts)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert len(calls) == -(-len(texts) // batch) and max(n for n, _ in calls) == min(batch, len(texts))
        assert all(types for _, types in calls)  # BERT pairs carry their token type ids
    # the types matter: without them the second segment reads as the first and the scores move
    ce = load_cross_encoder(world["reranker"])
    batch = tokenize_pairs(ce, [QUESTION] * 3, texts[:3])
    with torch.no_grad():
        untyped = pair_logits(ce.model, {k: v for k, v in batch.items() if k != "token_type_ids"}).numpy()
    assert np.abs(untyped - expected[:3]).max() > 1e-3


def test_score_pairs_keeps_input_order_across_blocks_and_threads(world):
    ce = load_cross_encoder(world["reranker"])
    texts = [t for _, t in world["passages"]]
    questions = [t[:6] for t in reversed(texts)]
    expected = direct_logits(world["reranker"], questions, texts)
    from dpr.models.cross_encoder import pair_ids

    scorer = PairScorer(ce.model)
    rule = lambda tok, q, p: pair_ids(tok, ce.settings, q, p)  # noqa: E731
    from dpr.encode import score_pairs_stream

    blocks = list(score_pairs_stream(scorer, ce.tokenizer, rule, list(zip(questions, texts)), batch_size=4,
                                     block_size=7, threads=3))
    assert [len(b) for b in blocks] == [7, 7, 7, 3]
    np.testing.assert_allclose(np.concatenate(blocks), expected, atol=1e-4)
    np.testing.assert_allclose(score_pairs(scorer, ce.tokenizer, rule, list(zip(questions, texts)), 64), expected,
                               atol=1e-4)


def test_a_reranker_uses_its_own_recorded_settings(world, tmp_path):
    """Two rerankers with the same weights, recorded with other pair lengths and lowercasing: each scores with its
    own, whatever the caller's bi-encoder uses."""
    short = save_tiny_reranker(tmp_path / "short", CrossEncoderSettings(max_length=12, q_max_length=4,
                                                                        do_lower_case=True))
    texts = [t for _, t in world["passages"][:6]]
    long_scores = Reranker.load(world["reranker"], precision="fp32").score(QUESTION, texts)
    short_scores = Reranker.load(short, precision="fp32").score(QUESTION, texts)
    np.testing.assert_allclose(short_scores, direct_logits(short, [QUESTION] * 6, texts), atol=1e-4)
    assert Reranker.load(short).settings == CrossEncoderSettings(12, 4, True)
    assert np.abs(short_scores - long_scores).max() > 1e-3  # 12 tokens of a pair are not 64


def test_rerank_hits_keeps_the_first_stage_score(world):
    rr = Reranker.load(world["reranker"], precision="fp32")
    hits = [Hit(pid, 1.0 - i / 10, text, "") for i, (pid, text) in enumerate(world["passages"][:8])]
    scores = rr.score(QUESTION, [h.text for h in hits])
    out = rr.rerank(QUESTION, hits, k=3)
    order = np.argsort(-scores, kind="stable")[:3]
    assert [h.pid for h in out] == [hits[i].pid for i in order]
    assert [h.first_stage_score for h in out] == [hits[i].score for i in order]
    np.testing.assert_allclose([h.score for h in out], scores[order], atol=1e-6)
    assert [h.reranker_score for h in out] == [h.score for h in out]
    with pytest.raises(ValueError, match="no text"):
        rr.rerank(QUESTION, [Hit("x", 1.0)])


def test_a_directory_that_is_not_a_reranker_is_one_input_error(world):
    with pytest.raises(InputError, match="is this a bi-encoder"):
        Reranker.load(world["model"] / "question_encoder")
    with pytest.raises(InputError, match="no such reranker directory"):
        Reranker.load(world["root"] / "nowhere")


# ----- the Retriever API -----

def test_retriever_with_a_reranker_reranks_the_top_depth(world):
    plain = Retriever.load(world["model"], world["emb"], world["ctx"], precision="fp32", passage_max_length=64)
    rr = Reranker.load(world["reranker"], precision="fp32")
    for depth, k in ((4, 6), (10, 3)):
        r = Retriever.load(world["model"], world["emb"], world["ctx"], precision="fp32", passage_max_length=64,
                           reranker=world["reranker"], reranker_depth=depth)
        first = plain.search(QUESTION, max(k, depth))
        scores = rr.score(QUESTION, [h.text for h in first[:depth]])
        order = list(np.argsort(-scores, kind="stable")) + list(range(depth, len(first)))
        hits = r.search(QUESTION, k)
        assert [h.pid for h in hits] == [first[i].pid for i in order][:k]
        assert [h.first_stage_score for h in hits] == pytest.approx([first[i].score for i in order][:k], abs=1e-5)
        below = [h for h in hits if h.reranker_score is None]
        assert len(below) == max(0, k - depth) and all(h.score < min(scores) for h in below)
        assert [r2.pids for r2 in r.rank([QUESTION], k)] == [[h.pid for h in hits]]
    with pytest.raises(ValueError, match="passages"):
        Retriever.load(world["model"], world["emb"], reranker=world["reranker"])


# ----- denoising -----

def test_false_negative_probability_is_the_two_way_softmax_against_the_best_positive():
    p = false_negative_probability(np.array([0.0, 2.0, 5.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-np.array([-2.0, 0.0, 3.0]))), rtol=1e-6)
    # a listwise model's logits shift freely per question: the scale does not move with them
    np.testing.assert_allclose(false_negative_probability(np.array([100.0, 102.0, 105.0]), np.array([101.0, 102.0])),
                               p, rtol=1e-6)


def test_denoising_drops_above_the_threshold_and_never_reorders():
    entries = [{"question": "q1", "positive_ctxs": [{"text": "P"}],
                "hard_negative_ctxs": [{"text": t} for t in ("a", "B", "c", "D", "e")]},
               {"question": "q2", "positive_ctxs": [], "hard_negative_ctxs": [{"text": "A"}]},
               {"question": "q3", "positive_ctxs": [{"text": "P"}], "hard_negative_ctxs": []}]
    seen = []

    def scores(questions, passages):  # capitals score with the positive; lower case well below it
        seen.extend(zip(questions, passages))
        return np.array([1.0 if p.isupper() else -3.0 for p in passages], dtype=np.float32)

    out, stats = with_denoised_negatives(entries, scores, 0.4)
    assert [c["text"] for c in out[0]["hard_negative_ctxs"]] == ["a", "c", "e"]
    assert [e[DROPPED_FIELD] for e in out] == [2, 0, 0]
    assert out[1]["hard_negative_ctxs"] == entries[1]["hard_negative_ctxs"]  # no positive: nothing to compare with
    assert stats == {"dropped": 2, "questions_with_drops": 1, "no_positive": 1, "scored_pairs": 6, "threshold": 0.4}
    assert seen[0] == ("q1", "P")
    # the threshold moves the cut: above sigmoid(0) = 0.5 the tied negatives stay; max_negatives cuts after it
    assert [c["text"] for c in with_denoised_negatives(entries, scores, 0.6)[0][0]["hard_negative_ctxs"]] == list(
        "aBcDe")
    assert [c["text"] for c in with_denoised_negatives(entries, scores, 0.4, 2)[0][0]["hard_negative_ctxs"]] == [
        "a", "c"]
    with pytest.raises(ValueError):
        with_denoised_negatives(entries, scores, 1.0)
    json.dumps(out)  # the per-question field is plain JSON
