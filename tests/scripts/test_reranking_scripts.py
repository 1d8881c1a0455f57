"""Step 4 with a reranker (dense_retriever.py --reranker), data/rerank.py (any submission + reranker), and
denoised hard negatives (--mine_hard_negatives --reranker, data/denoise_negatives.py), on tiny random models."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import dense_retriever as dr
import generate_dense_embeddings as gen
from dpr import Reranker
from dpr.eval.dureader import evaluate
from dpr.models.cross_encoder import CrossEncoderSettings, PairScorer
from dpr.retrieval.mining import false_negative_probability
from tests.data_scripts import load_script
from tests.tiny_encoder import random_passages, save_tiny_biencoder, write_passages_tsv
from tests.tiny_reranker import save_tiny_reranker

rerank_script = load_script("rerank")
denoise_script = load_script("denoise_negatives")
N_DOCS = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rrs")
    texts = [t for _, t in random_passages(30, seed=21)]
    passages = [(f"para{i // 3}-{i % 3}", t) for i, t in enumerate(texts)]
    ctx = write_passages_tsv(root / "passages.tsv", passages)
    model = save_tiny_biencoder(root / "model")
    assert gen.main(["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(root / "emb"),
                     "--p_sequence_length", "64", "--fp32"]) == 0
    golds = [0, 4, 8, 13, 21, 29]
    with open(root / "dev.json", "w", encoding="utf-8") as f:
        for n, i in enumerate(golds):
            f.write(json.dumps({"question_id": f"q{n}", "question": texts[i][:12], "answer_paragraphs": [
                {"paragraph_id": passages[i][0], "paragraph_text": texts[i]}]}, ensure_ascii=False) + "\n")
    return {"root": root, "model": model, "ctx": ctx, "passages": passages, "texts": dict(passages),
            "questions": [texts[i][:12] for i in golds], "emb": str(root / "emb_shard*.npy"),
            "reranker": save_tiny_reranker(root)}


def retrieve(world, out, *extra):
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
                    "--ctx_file", str(world["ctx"]), "--encoded_ctx_file", world["emb"], "--out_file", str(out),
                    "--p_sequence_length", "64", "--fp32", *extra]) == 0
    rerank = [json.loads(line) for line in out.with_suffix(".rerank.jsonl").read_text(encoding="utf-8").splitlines()]
    return json.loads(out.read_text(encoding="utf-8")), rerank


def reranker_scores(world, question, pids, path=None):
    return Reranker.load(path or world["reranker"], precision="fp32").score(
        question, [(world["texts"][p], "") for p in pids])


def expected_order(world, question, first_pids, depth, k, path=None):
    scores = reranker_scores(world, question, first_pids[:depth], path)
    order = list(np.argsort(-scores, kind="stable")) + list(range(depth, len(first_pids)))
    return [first_pids[i] for i in order][:k], scores


@pytest.fixture(scope="module")
def plain(world, tmp_path_factory):
    """The dense run without a reranker, 20 deep (the first stage of every depth below)."""
    return retrieve(world, tmp_path_factory.mktemp("plain") / "res.json", "--n_docs", "20")[0]


@pytest.mark.parametrize("depth", [3, 6])
def test_reranker_reorders_the_top_depth_and_everything_written_follows(world, plain, tmp_path, depth):
    sub, rerank = retrieve(world, tmp_path / "res.json", "--n_docs", str(N_DOCS), "--reranker", str(world["reranker"]),
                           "--reranker_depth", str(depth), "--trec_file", str(tmp_path / "run.trec"))
    trec = [line.split() for line in (tmp_path / "run.trec").read_text().splitlines()]
    assert sub != {q: p[:N_DOCS] for q, p in plain.items()}  # the reranker moved something
    for n, question in enumerate(world["questions"]):
        qid = f"q{n}"
        want, scores = expected_order(world, question, plain[qid], depth, N_DOCS)
        assert sub[qid] == want
        assert sub[qid][depth:] == plain[qid][depth:N_DOCS]  # below the depth: first-stage order
        row = rerank[n]["passages"]
        assert [p["passage_id"] for p in row] == want
        np.testing.assert_allclose([p["reranker_score"] for p in row[:depth]], sorted(scores, reverse=True),
                                   atol=1e-4)
        assert all(p["reranker_score"] is None for p in row[depth:])
        assert all(p["score"] < min(scores) for p in row[depth:])
        assert [p["score"] for p in row] == sorted((p["score"] for p in row), reverse=True)
        assert all(p["first_stage_score"] is not None and p["text"] == world["texts"][p["passage_id"]] for p in row)
        # trec_eval re-sorts by score: the order survives
        mine = sorted((r for r in trec if r[0] == qid), key=lambda r: -float(r[4]))
        assert [r[2] for r in mine] == want
    metrics = json.loads((tmp_path / "res.metrics.json").read_text())
    reference = {f"q{n}": {json.loads(line)["answer_paragraphs"][0]["paragraph_id"]} for n, line in
                 enumerate((world["root"] / "dev.json").read_text(encoding="utf-8").splitlines())}
    assert metrics["MRR@10"] == evaluate(reference, sub)["MRR@10"]


def test_a_depth_above_n_docs_reranks_that_deep(world, plain, tmp_path):
    sub, _ = retrieve(world, tmp_path / "res.json", "--n_docs", "4", "--reranker", str(world["reranker"]),
                      "--reranker_depth", "15")
    for n, question in enumerate(world["questions"]):
        assert sub[f"q{n}"] == expected_order(world, question, plain[f"q{n}"], 15, 4)[0]
    # the deep reranking reaches passages the first stage's top 4 did not hold
    assert any(set(sub[f"q{n}"]) - set(plain[f"q{n}"][:4]) for n in range(6))


def test_reranker_batch_size_sets_the_pairs_per_forward_pass(world, tmp_path, monkeypatch):
    sizes = []
    forward = PairScorer.forward

    def counting(self, ids, mask, types=None):
        sizes.append(ids.shape[0])
        return forward(self, ids, mask, types)

    monkeypatch.setattr(PairScorer, "forward", counting)
    runs = {}
    for batch in ("5", None):
        sizes.clear()
        runs[batch] = retrieve(world, tmp_path / f"res{batch}.json", "--n_docs", "6", "--reranker",
                               str(world["reranker"]), "--reranker_depth", "6",
                               *(("--reranker_batch_size", batch) if batch else ()))[0]
        assert sum(sizes) == 36
        assert max(sizes) == (5 if batch else 36)  # default on CPU: 128 pairs a batch
    assert runs["5"] == runs[None]


def test_hybrid_with_a_reranker_keeps_both_first_stage_scores(world, tmp_path):
    hybrid, _ = retrieve(world, tmp_path / "h.json", "--n_docs", "12", "--hybrid_alpha", "0.5")
    sub, rerank = retrieve(world, tmp_path / "hr.json", "--n_docs", "12", "--hybrid_alpha", "0.5", "--reranker",
                           str(world["reranker"]), "--reranker_depth", "5")
    for n, question in enumerate(world["questions"]):
        assert sub[f"q{n}"] == expected_order(world, question, hybrid[f"q{n}"], 5, 12)[0]
        assert {"dense_score", "bm25_score", "first_stage_score", "reranker_score"} <= set(rerank[n]["passages"][0])


def test_the_run_uses_the_rerankers_settings_not_the_bi_encoders(world, plain, tmp_path):
    """A reranker recorded with 10-token pairs and lowercasing, used in a run whose bi-encoder flags say otherwise
    (--p_sequence_length 64, --q_sequence_length 32, no --do_lower_case): its scores are its own settings'."""
    short = save_tiny_reranker(tmp_path, CrossEncoderSettings(max_length=10, q_max_length=3, do_lower_case=True))
    _, rerank = retrieve(world, tmp_path / "res.json", "--n_docs", "5", "--reranker", str(short),
                         "--reranker_depth", "5")
    for n, question in enumerate(world["questions"]):
        got = {p["passage_id"]: p["reranker_score"] for p in rerank[n]["passages"]}
        pids = plain[f"q{n}"][:5]
        np.testing.assert_allclose([got[p] for p in pids], reranker_scores(world, question, pids, short), atol=1e-4)
        long = reranker_scores(world, question, pids)  # the same weights with 64-token pairs
        assert np.abs(np.array([got[p] for p in pids]) - long).max() > 1e-3


def test_query_with_a_reranker_prints_the_reranked_hits(world, plain, capsys):
    question = world["questions"][1]
    assert dr.main(["--model_file", str(world["model"]), "--encoded_ctx_file", world["emb"], "--ctx_file",
                    str(world["ctx"]), "--fp32", "--query", question, "--n_docs", "4", "--reranker",
                    str(world["reranker"]), "--reranker_depth", "10"]) == 0
    rows = [line.split(maxsplit=3) for line in capsys.readouterr().out.splitlines()]
    want, scores = expected_order(world, question, plain["q1"], 10, 4)
    assert [r[2] for r in rows] == want
    np.testing.assert_allclose([float(r[1]) for r in rows], sorted(scores, reverse=True)[:4], atol=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["--reranker_depth", "5"], "need --reranker"),
    (["--reranker_batch_size", "5"], "need --reranker"),
    (["--reranker", "R", "--denoise_threshold", "0.5"], "needs --mine_hard_negatives"),
    (["--reranker", "R", "--reranker_depth", "0"], "must be a positive integer"),
])
def test_reranker_flag_errors(world, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        retrieve(world, tmp_path / "res.json", *argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("which", ["missing", "bi-encoder"])
def test_a_bad_reranker_directory_is_one_error_line(world, tmp_path, capsys, caplog, which):
    path = tmp_path / "nowhere" if which == "missing" else world["model"] / "question_encoder"
    caplog.set_level(logging.INFO)
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
                    "--ctx_file", str(world["ctx"]), "--encoded_ctx_file", world["emb"], "--out_file",
                    str(tmp_path / "o" / "res.json"), "--fp32", "--reranker", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0]
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    assert "encoded" not in caplog.text and "searched" not in caplog.text  # refused before the work


# ----- data/rerank.py -----

def test_rerank_script_on_a_submission_equals_the_step_4_reranker(world, plain, tmp_path):
    (tmp_path / "in.json").write_text(json.dumps({q: p[:N_DOCS] for q, p in plain.items()}), encoding="utf-8")
    assert rerank_script.main(["--in_file", str(tmp_path / "in.json"), "--qa_file", str(world["root"] / "dev.json"),
                               "--ctx_file", str(world["ctx"]), "--reranker", str(world["reranker"]),
                               "--reranker_depth", "5", "--n_docs", str(N_DOCS), "--out_file",
                               str(tmp_path / "rr.json"), "--fp32"]) == 0
    step4, _ = retrieve(world, tmp_path / "s4.json", "--n_docs", str(N_DOCS), "--reranker", str(world["reranker"]),
                        "--reranker_depth", "5")
    assert json.loads((tmp_path / "rr.json").read_text()) == step4
    rows = [json.loads(line) for line in (tmp_path / "rr.rerank.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(p["first_stage_score"] is None for r in rows for p in r["passages"])
    assert [p["reranker_score"] is None for p in rows[0]["passages"]] == [False] * 5 + [True] * 3
    assert json.loads((tmp_path / "rr.metrics.json").read_text())["QueriesRanked"] == 6


@pytest.mark.parametrize("content, message", [
    ('{"zz": ["para0-0"]}', "'zz' is not in"),
    ('{"q0": "para0-0"}', "expected a list of paragraph ids"),
    ('{"q0": ["nope"]}', "not in this file"),
    ('[1, 2', "malformed JSON"),
])
def test_rerank_script_bad_input_is_one_line_and_writes_nothing(world, tmp_path, capsys, content, message):
    (tmp_path / "in.json").write_text(content, encoding="utf-8")
    code = rerank_script.main(["--in_file", str(tmp_path / "in.json"), "--qa_file", str(world["root"] / "dev.json"),
                               "--ctx_file", str(world["ctx"]), "--reranker", str(world["reranker"]), "--out_file",
                               str(tmp_path / "out" / "rr.json")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ----- denoised hard negatives -----

def training_file(world, path):
    train = []
    for i in (0, 5, 10, 17, 26):
        pid, text = world["passages"][i]
        train.append({"question": text[:10], "answers": [], "positive_ctxs": [{"title": "", "text": text,
                      "passage_id": pid}], "negative_ctxs": [], "hard_negative_ctxs": []})
    path.write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    return path


def mine(world, tmp_path, name, *extra):
    out = tmp_path / name
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(training_file(world, tmp_path / "t.json")),
                    "--ctx_file", str(world["ctx"]), "--encoded_ctx_file", world["emb"], "--mine_hard_negatives",
                    str(out), "--n_docs", "20", "--skip_top", "1", "--p_sequence_length", "64", "--fp32",
                    *extra]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def probabilities(world, entry):
    rr = Reranker.load(world["reranker"], precision="fp32")
    pos = rr.score(entry["question"], [(c["text"], c["title"]) for c in entry["positive_ctxs"]])
    neg = rr.score(entry["question"], [(c["text"], c["title"]) for c in entry["hard_negative_ctxs"]])
    return false_negative_probability(neg, pos)


def test_mining_with_a_reranker_only_drops_likely_positives(world, tmp_path, caplog):
    plain = mine(world, tmp_path, "plain.json")
    probs = [probabilities(world, e) for e in plain]
    cut = float(np.median(np.concatenate(probs)))  # a threshold with drops on both sides, whatever the random model
    with caplog.at_level(logging.INFO):
        denoised = mine(world, tmp_path, "denoised.json", "--reranker", str(world["reranker"]),
                        "--denoise_threshold", f"{cut:.6f}")
    total = 0
    for before, after, p in zip(plain, denoised, probs):
        want = [c for c, pc in zip(before["hard_negative_ctxs"], p) if pc <= float(f"{cut:.6f}")]
        assert after["hard_negative_ctxs"] == want  # a filter of the plain mining: same order, nothing added
        assert after["dropped_hard_negatives"] == len(before["hard_negative_ctxs"]) - len(want)
        total += after["dropped_hard_negatives"]
    assert 0 < total < sum(len(e["hard_negative_ctxs"]) for e in plain)
    assert f"dropped {total} hard negatives" in caplog.text
    # the threshold changes what is dropped; --num_hard_negatives counts after the drops
    looser = mine(world, tmp_path, "looser.json", "--reranker", str(world["reranker"]), "--denoise_threshold", "0.99")
    assert sum(e["dropped_hard_negatives"] for e in looser) < total
    capped = mine(world, tmp_path, "capped.json", "--reranker", str(world["reranker"]), "--denoise_threshold",
                  f"{cut:.6f}", "--num_hard_negatives", "3")
    assert [e["hard_negative_ctxs"] for e in capped] == [e["hard_negative_ctxs"][:3] for e in denoised]
    assert "dropped_hard_negatives" not in plain[0]


def test_denoise_script_filters_a_training_files_existing_negatives(world, tmp_path, caplog):
    mined = mine(world, tmp_path, "plain.json")
    (tmp_path / "train.json").write_text(json.dumps(mined, ensure_ascii=False), encoding="utf-8")
    for threshold in ("0.3", "0.7"):
        out = tmp_path / f"d{threshold}.json"
        assert denoise_script.main(["--in_file", str(tmp_path / "train.json"), "--out_file", str(out), "--reranker",
                                    str(world["reranker"]), "--denoise_threshold", threshold, "--fp32"]) == 0
        for before, after in zip(mined, json.loads(out.read_text(encoding="utf-8"))):
            p = probabilities(world, before)
            assert after["hard_negative_ctxs"] == [c for c, pc in zip(before["hard_negative_ctxs"], p)
                                                   if pc <= float(threshold)]
    # the same rule as mining with --reranker
    same = mine(world, tmp_path, "m.json", "--reranker", str(world["reranker"]), "--denoise_threshold", "0.3")
    assert json.loads((tmp_path / "d0.3.json").read_text(encoding="utf-8")) == same


@pytest.mark.parametrize("content, message", [
    ('[{"question": "q", "hard_negative_ctxs": [1]}]', ":1: entry 0: hard_negative_ctxs must be a list of objects"),
    ('[{"q": 1}]', "entry 0 is not an object"),
    ('[]', "no training questions"),
])
def test_denoise_script_bad_input_is_one_line_and_writes_nothing(world, tmp_path, capsys, content, message):
    (tmp_path / "in.json").write_text(content, encoding="utf-8")
    code = denoise_script.main(["--in_file", str(tmp_path / "in.json"), "--out_file", str(tmp_path / "o.json"),
                                "--reranker", str(world["reranker"])])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "o.json").exists()


def test_denoise_threshold_outside_zero_one_is_a_usage_error(world, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        denoise_script.main(["--in_file", "x", "--out_file", str(tmp_path / "o.json"), "--reranker", "r",
                             "--denoise_threshold", "1.5"])
    assert e.value.code == 2 and "probability in (0, 1)" in capsys.readouterr().err


def test_run_test_sh_reranks_with_RERANKER(world, plain, tmp_path):
    import os
    import subprocess

    from tests.data_scripts import ROOT

    env = {**os.environ, "MODEL_FILE": str(world["model"]), "CTX_FILE": str(world["ctx"]), "EMB_DIR": str(world["root"]),
           "QA_FILE": str(world["root"] / "dev.json"), "OUT_FILE": str(tmp_path / "res.json"), "N_DOCS": "5",
           "PRECISION": "", "RERANKER": str(world["reranker"]), "RERANKER_DEPTH": "3", "RERANKER_BATCH_SIZE": "2"}
    run = subprocess.run(["sh", "run_test.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    sub = json.loads((tmp_path / "res.json").read_text())
    assert sub["q0"] == expected_order(world, world["questions"][0], plain["q0"], 3, 5)[0]
    assert "batch 2 on cpu" in run.stderr
    rows = json.loads((tmp_path / "res.rerank.jsonl").read_text(encoding="utf-8").splitlines()[0])["passages"]
    assert [p["reranker_score"] is None for p in rows] == [False] * 3 + [True] * 2
    bad = subprocess.run(["sh", "run_test.sh"], cwd=ROOT, env={**env, "RERANKER": str(tmp_path / "none")},
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "RERANKER=" in bad.stderr


def test_the_reranker_flags_derived_depths_and_threshold():
    base = ["--qa_file", "q", "--encoded_ctx_file", "e", "--ctx_file", "c"]
    c = dr.parse_args(base + ["--out_file", "o", "--reranker", "R", "--n_docs", "10"])
    assert (c.rerank_depth, c.first_stage_depth, c.search_depth, c.denoise) == (50, 50, 50, None)
    c = dr.parse_args(base + ["--out_file", "o", "--reranker", "R", "--n_docs", "10", "--reranker_depth", "5",
                              "--hybrid_alpha", "0.5"])
    assert (c.rerank_depth, c.first_stage_depth, c.search_depth) == (5, 10, 100)
    c = dr.parse_args(base + ["--mine_hard_negatives", "m.json", "--reranker", "R"])
    assert (c.rerank_depth, c.first_stage_depth, c.denoise) == (None, 50, 0.5)  # mining filters, never reranks
    assert dr.parse_args(base + ["--mine_hard_negatives", "m", "--reranker", "R", "--denoise_threshold", "0.2"]
                         ).denoise == 0.2
    assert dr.parse_args(base + ["--out_file", "o"]).first_stage_depth == 50


@pytest.mark.parametrize("argv, message", [
    (["--mine_hard_negatives", "m", "--reranker", "R", "--reranker_depth", "5"], "no effect with --mine_hard"),
    (["--mine_hard_negatives", "m", "--reranker", "R", "--denoise_threshold", "1"], "probability in (0, 1)"),
    (["--out_file", "o", "--reranker", "R", "--ctx_file", ""], "--reranker needs --ctx_file"),
    (["--q_encoding_path", "q.npy", "--encode_q_and_save", "--reranker", "R"], "not with --encode_q_and_save"),
])
def test_reranker_rules_between_flags(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        dr.parse_args(["--qa_file", "q", "--encoded_ctx_file", "e", "--ctx_file", "c", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err
