import json
import logging
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

import dense_retriever as dr
import generate_dense_embeddings as gen
from dpr.encode import encode_texts
from dpr.eval.dureader import evaluate
from dpr.index.embeddings import save_shard
from dpr.models.encoder import Encoder, EncoderSettings
from dpr.retrieval import passage_shards
from tests.tiny_encoder import random_passages, save_tiny_biencoder, tiny_bert, tiny_tokenizer, write_passages_tsv

N_DOCS = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model, 30 passages (ids 'para<j>-<k>': 3 passages per paragraph) in 2 embedding shards, and
    dev questions whose gold passage is the one each was written from."""
    root = tmp_path_factory.mktemp("world")
    model = save_tiny_biencoder(root / "model")
    texts = [t for _, t in random_passages(30, seed=11)]
    passages = [(f"para{i // 3}-{i % 3}", t) for i, t in enumerate(texts)]
    ctx = write_passages_tsv(root / "passages.tsv", passages)
    for k in range(2):
        assert gen.main(["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(root / "emb"),
                         "--shard_id", str(k), "--num_shards", "2", "--p_sequence_length", "64", "--fp32"]) == 0
    golds = [0, 4, 8, 13, 21, 29]
    with open(root / "dev.json", "w", encoding="utf-8") as f:
        for n, i in enumerate(golds):
            q = {"question_id": f"q{n}", "question": texts[i][:12],
                 "answer_paragraphs": [{"paragraph_id": passages[i][0], "paragraph_text": texts[i]}]}
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    return {"root": root, "model": model, "ctx": ctx, "passages": passages, "golds": golds,
            "questions": [texts[i][:12] for i in golds], "emb": str(root / "emb_shard*.npy")}


def error_line(capsys) -> str:
    """The one `error: ...` line a failed run printed on stderr (the scripts' exit convention)."""
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def expected_ranking(world):
    """Brute force with the two towers, independent of faiss and the script."""
    tok = tiny_tokenizer()
    q = encode_texts(Encoder.from_pretrained(world["model"] / "question_encoder"), tok, world["questions"], "query", 32)
    p = encode_texts(Encoder.from_pretrained(world["model"] / "passage_encoder"), tok,
                     [t for _, t in world["passages"]], "passage", 64)
    scores = q @ p.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :N_DOCS]
    return [[world["passages"][j][0] for j in row] for row in order], np.take_along_axis(scores, order, 1)


def retrieve(world, out, *extra, qa=None):
    return dr.main(["--model_file", str(world["model"]), "--qa_file", str(qa or world["root"] / "dev.json"),
                    "--ctx_file", str(world["ctx"]), "--encoded_ctx_file", world["emb"], "--out_file", str(out),
                    "--n_docs", str(N_DOCS), "--p_sequence_length", "64", "--fp32", *extra])


def test_submission_rerank_and_metrics_end_to_end(world, tmp_path, capsys):
    assert retrieve(world, tmp_path / "res.json") == 0
    ranking, scores = expected_ranking(world)
    sub = json.loads((tmp_path / "res.json").read_text(encoding="utf-8"))
    assert sub == {f"q{n}": r for n, r in enumerate(ranking)}

    rerank = [json.loads(line) for line in (tmp_path / "res.rerank.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = dict(world["passages"])
    assert [r["question_id"] for r in rerank] == [f"q{n}" for n in range(6)]
    for r, exp_scores in zip(rerank, scores):
        assert [p["rank"] for p in r["passages"]] == list(range(1, N_DOCS + 1))
        assert all(p["text"] == texts[p["passage_id"]] for p in r["passages"])
        np.testing.assert_allclose([p["score"] for p in r["passages"]], exp_scores, atol=1e-4)

    metrics = json.loads((tmp_path / "res.metrics.json").read_text())
    gold = [world["passages"][i][0] for i in world["golds"]]
    ranks = [r.index(g) + 1 if g in r else None for r, g in zip(ranking, gold)]
    assert metrics["recall@1"] == pytest.approx(sum(k == 1 for k in ranks) / 6)
    assert metrics["MRR@10"] == pytest.approx(sum(1 / k for k in ranks if k) / 6)
    assert metrics["recall@50"] == pytest.approx(sum(k is not None for k in ranks) / 6)
    extra = metrics.pop("extra")  # the official keys stay exactly as the official evaluator writes them
    assert metrics == evaluate({f"q{n}": {g} for n, g in enumerate(gold)}, sub)
    assert extra["nDCG@10"] == pytest.approx(sum(1 / np.log2(k + 1) for k in ranks if k) / 6)
    assert extra["recall@100"] is None and "--n_docs 100" in extra["note"]  # only N_DOCS were retrieved
    assert '"MRR@10"' in capsys.readouterr().out


def test_trec_run_file_matches_the_submission(world, tmp_path):
    assert retrieve(world, tmp_path / "res.json", "--trec_file", str(tmp_path / "run.trec"), "--trec_tag", "t1") == 0
    ranking, scores = expected_ranking(world)
    rows = [line.split() for line in (tmp_path / "run.trec").read_text().splitlines()]
    assert len(rows) == 6 * N_DOCS and all(len(r) == 6 and r[1] == "Q0" and r[5] == "t1" for r in rows)
    for n, (pids, exp) in enumerate(zip(ranking, scores)):
        mine = [r for r in rows if r[0] == f"q{n}"]
        assert [r[2] for r in mine] == pids and [int(r[3]) for r in mine] == list(range(1, N_DOCS + 1))
        np.testing.assert_allclose([float(r[4]) for r in mine], exp, atol=1e-4)
    assert not list(tmp_path.glob("*.trec.tmp*"))
    with pytest.raises(SystemExit):
        dr.parse_args(["--qa_file", "x", "--encoded_ctx_file", "e", "--out_file", "o", "--trec_tag", "a b"])


def test_windowed_search_writes_the_same_submission(world, tmp_path):
    assert retrieve(world, tmp_path / "a.json") == 0
    assert retrieve(world, tmp_path / "b.json", "--search_shard_size", "7") == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_index_types_run(world, tmp_path, kind):
    assert retrieve(world, tmp_path / "r.json", "--index_type", kind, "--nlist", "2", "--pq_m", "4") == 0
    sub = json.loads((tmp_path / "r.json").read_text())
    assert len(sub) == 6 and all(len(v) == N_DOCS and len(set(v)) == N_DOCS for v in sub.values())


def test_out_file_directory_like_the_seed(world, tmp_path):
    assert retrieve(world, str(tmp_path) + "/", "--dureader_test") == 0
    assert {p.name for p in tmp_path.iterdir()} == {f"top{N_DOCS}_res.json", f"top{N_DOCS}_res.rerank.jsonl",
                                                   f"top{N_DOCS}_res.metrics.json"}


def test_encode_q_and_save_then_search_without_the_model(world, tmp_path):
    qpath = tmp_path / "dev_q.npy"
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
                    "--q_encoding_path", str(qpath), "--encode_q_and_save"]) == 0
    assert np.load(qpath).shape == (6, 32) and (tmp_path / "dev_q.npy.qids.txt").read_text().split() == [
        f"q{n}" for n in range(6)]
    assert {p.name for p in tmp_path.iterdir()} == {"dev_q.npy", "dev_q.npy.qids.txt", "dev_q.npy.meta.json"}
    ranking, _ = expected_ranking(world)
    assert dr.main(["--model_file", str(tmp_path / "no-such-model"), "--qa_file", str(world["root"] / "dev.json"),
                    "--encoded_ctx_file", world["emb"], "--out_file", str(tmp_path / "r.json"), "--n_docs",
                    str(N_DOCS), "--q_encoding_path", str(qpath)]) == 0
    assert json.loads((tmp_path / "r.json").read_text()) == {f"q{n}": r for n, r in enumerate(ranking)}


def test_saved_question_vectors_for_other_questions_are_refused(world, tmp_path, capsys):
    qpath = tmp_path / "q.npy"
    qa = tmp_path / "q.tsv"
    qa.write_text("x1\t中国\nx2\t北京\n", encoding="utf-8")
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(qa), "--q_encoding_path", str(qpath),
                    "--encode_q_and_save"]) == 0
    capsys.readouterr()
    assert retrieve(world, tmp_path / "r.json", "--q_encoding_path", str(qpath)) == 2
    assert "q.npy.qids.txt: saved for 2 other questions than the 6 in --qa_file" in error_line(capsys)
    assert not (tmp_path / "r.json").exists()


def test_tsv_questions_without_labels_write_no_metrics(world, tmp_path):
    qa = tmp_path / "test.tsv"
    qa.write_text("t1\t中国的北京\n", encoding="utf-8")
    assert retrieve(world, tmp_path / "r.json", qa=qa) == 0
    assert list(json.loads((tmp_path / "r.json").read_text())) == ["t1"]
    assert not (tmp_path / "r.metrics.json").exists()


def test_no_questions_is_an_error_and_writes_nothing(world, tmp_path, capsys):
    qa = tmp_path / "empty.json"
    qa.write_text("\n")
    assert retrieve(world, tmp_path / "r.json", qa=qa) == 2
    line = error_line(capsys)
    assert "empty.json" in line and "no questions" in line
    assert {p.name for p in tmp_path.iterdir()} == {"empty.json"}


def test_model_and_index_dimension_mismatch(world, tmp_path, capsys):
    save_shard(tmp_path / "wide_shard0", [p for p, _ in world["passages"]], np.zeros((30, 48), np.float32))
    code = dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
                    "--encoded_ctx_file", str(tmp_path / "wide_shard*.npy"), "--out_file", str(tmp_path / "r.json"),
                    "--allow_mismatched_vectors"])
    assert code == 2
    assert "wide_shard0.npy: embeddings have dimension 48 but the question encoder" in error_line(capsys)
    assert not (tmp_path / "r.json").exists()


def test_embeddings_from_another_collection(world, tmp_path, capsys):
    save_shard(tmp_path / "other_shard0", ["zz-0", "zz-1"], np.ones((2, 32), np.float32))
    code = dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
                    "--ctx_file", str(world["ctx"]), "--encoded_ctx_file", str(tmp_path / "other_shard0.npy"),
                    "--out_file", str(tmp_path / "r.json"), "--allow_mismatched_vectors"])
    assert code == 2 and "passages.tsv: 2 retrieved passage ids are not in this file" in error_line(capsys)
    assert not (tmp_path / "r.json").exists()


def test_mining_never_writes_a_positive_or_its_sibling(world, tmp_path, caplog):
    passages = world["passages"]
    train = []
    for n, i in enumerate([0, 5, 10, 17, 26]):
        pid, text = passages[i]
        train.append({"question": text[:10], "answers": [], "positive_ctxs": [{"title": "", "text": text,
                      "passage_id": pid}], "negative_ctxs": [], "hard_negative_ctxs": [{"title": "", "text": "旧",
                      "passage_id": "old"}]})
    train[1]["positive_ctxs"].append({"title": "", "text": passages[20][1]})  # a positive known only by its text
    (tmp_path / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    with caplog.at_level(logging.INFO):
        assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(tmp_path / "train.json"),
                        "--ctx_file", str(world["ctx"]), "--encoded_ctx_file", world["emb"], "--mine_hard_negatives",
                        str(tmp_path / "mined.json"), "--n_docs", "30", "--skip_top", "0", "--sibling_ids"]) == 0
    mined = json.loads((tmp_path / "mined.json").read_text(encoding="utf-8"))
    texts = dict(passages)
    for before, after in zip(train, mined):
        family = after["positive_ctxs"][0]["passage_id"].split("-")[0]
        negs = after["hard_negative_ctxs"]
        assert after["positive_ctxs"] == before["positive_ctxs"] and after["question"] == before["question"]
        assert negs and all(not n["passage_id"].startswith(family + "-") for n in negs)
        assert all(n["text"] == texts[n["passage_id"]] for n in negs)
        assert all(n["text"] not in {p["text"] for p in after["positive_ctxs"]} for n in negs)
        assert len(negs) == 30 - 3 - (len(before["positive_ctxs"]) - 1)  # the rest were all kept


def test_mining_skips_the_top_ranks_and_caps_the_count(world, tmp_path):
    pid, text = world["passages"][3]
    train = [{"question": text[:10], "answers": [], "positive_ctxs": [{"title": "", "text": text, "passage_id": pid}],
              "negative_ctxs": [], "hard_negative_ctxs": []}]
    (tmp_path / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")

    def mine(*extra):
        out = tmp_path / "m.json"
        assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(tmp_path / "train.json"),
                        "--ctx_file", str(world["ctx"]), "--encoded_ctx_file", world["emb"], "--mine_hard_negatives",
                        str(out), "--n_docs", "12", *extra]) == 0
        return [n["passage_id"] for n in json.loads(out.read_text())[0]["hard_negative_ctxs"]]

    every = mine("--skip_top", "0")
    after4 = mine("--skip_top", "4")
    assert after4 == every[len(every) - len(after4):] and 1 <= len(every) - len(after4) <= 4
    assert mine("--skip_top", "0", "--num_hard_negatives", "5") == every[:5]


def _mine_one(world, tmp_path, ctx, *extra):
    """Mine for one question whose positive is para1-1 (siblings para1-0, para1-2); every passage is retrieved."""
    pid, text = world["passages"][4]
    train = [{"question": text[:10], "answers": [], "positive_ctxs": [{"title": "", "text": text, "passage_id": pid}],
              "negative_ctxs": [], "hard_negative_ctxs": []}]
    (tmp_path / "train.json").write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "mined.json"
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(tmp_path / "train.json"), "--ctx_file",
                    str(ctx), "--encoded_ctx_file", world["emb"], "--mine_hard_negatives", str(out), "--n_docs", "30",
                    "--skip_top", "0", *extra]) == 0
    return json.loads(out.read_text(encoding="utf-8"))[0]["hard_negative_ctxs"]


@pytest.mark.parametrize("how", ["neither", "flag", "record", "opaque record"])
def test_mining_applies_the_sibling_rule_only_when_told(world, tmp_path, how):
    ctx = tmp_path / "passages.tsv"
    ctx.write_text(world["ctx"].read_text(encoding="utf-8"), encoding="utf-8")
    if how.endswith("record"):
        scheme = "opaque" if how.startswith("opaque") else "paragraph-k"
        (tmp_path / "collection_meta.json").write_text(json.dumps({"id_scheme": scheme}))
    negs = {n["passage_id"] for n in _mine_one(world, tmp_path, ctx, *(["--sibling_ids"] if how == "flag" else []))}
    assert "para1-1" not in negs
    if how in ("neither", "opaque record"):
        assert {"para1-0", "para1-2"} <= negs and len(negs) == 29
    else:
        assert not {"para1-0", "para1-2"} & negs and len(negs) == 27


def test_mining_drops_a_passage_with_the_positives_text(world, tmp_path):
    rows = world["ctx"].read_text(encoding="utf-8").splitlines()
    positive_text = world["passages"][4][1]
    rows[1 + 20] = f"para6-2\t{positive_text}\t"  # another paragraph's passage now reads like the positive
    ctx = tmp_path / "passages.tsv"
    ctx.write_text("\n".join(rows) + "\n", encoding="utf-8")
    # the edited file is not the one the vectors record (a shortcut for re-encoding it): say so
    negs = {n["passage_id"] for n in _mine_one(world, tmp_path, ctx, "--allow_mismatched_vectors")}
    assert world["passages"][20][0] == "para6-2" and "para6-2" not in negs and len(negs) == 28


# ----- passage vectors pair with the question tower that searches them -----

def other_model(root):
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="问", passage_prefix="文")
    for seed, name in ((5, "question_encoder"), (6, "passage_encoder")):
        Encoder(tiny_bert(seed), settings).save_pretrained(root / name, tiny_tokenizer())
    return root


@pytest.fixture(scope="module")
def b_vectors(world, tmp_path_factory):
    """The world's passages encoded by another model, B."""
    root = tmp_path_factory.mktemp("b")
    model_b = other_model(root / "model_b")
    assert gen.main(["--model_file", str(model_b), "--ctx_file", str(world["ctx"]), "--out_file", str(root / "emb"),
                     "--p_sequence_length", "64"]) == 0
    return model_b, str(root / "emb_shard*.npy")


def test_model_a_over_model_b_vectors_stops_naming_both(world, b_vectors, tmp_path, caplog, capsys):
    model_b, emb_b = b_vectors
    argv = ["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
            "--encoded_ctx_file", emb_b, "--out_file", str(tmp_path / "r.json")]
    assert dr.main(argv) == 2
    line = error_line(capsys)
    assert f"passage vectors made by {model_b} (" in line
    assert f"do not pair with the question tower of {world['model']} (" in line
    assert not (tmp_path / "r.json").exists()
    caplog.clear()
    assert dr.main(argv + ["--allow_mismatched_vectors"]) == 0
    assert "searching anyway" in caplog.text and (tmp_path / "r.json").exists()


def test_saved_question_vectors_of_model_a_over_model_b_vectors_stop(world, b_vectors, tmp_path, capsys):
    _, emb_b = b_vectors
    qpath = tmp_path / "q.npy"
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
                    "--q_encoding_path", str(qpath), "--encode_q_and_save"]) == 0
    argv = ["--qa_file", str(world["root"] / "dev.json"), "--q_encoding_path", str(qpath), "--encoded_ctx_file",
            emb_b, "--out_file", str(tmp_path / "r.json")]
    capsys.readouterr()
    assert dr.main(argv) == 2
    assert f"do not pair with the saved question vectors {qpath} made by {world['model']}" in error_line(capsys)
    assert dr.main(argv[:-4] + ["--encoded_ctx_file", world["emb"], "--out_file", str(tmp_path / "r.json")]) == 0


def test_shards_of_two_models_are_refused(world, b_vectors, tmp_path, capsys):
    _, emb_b = b_vectors
    for name in ("emb_shard0.npy", "emb_shard0.ids.txt", "emb_shard0.meta.json"):
        shutil.copy(world["root"] / name, tmp_path / name)
    for name in ("emb_shard0.npy", "emb_shard0.ids.txt", "emb_shard0.meta.json"):
        shutil.copy(Path(emb_b).parent / name, tmp_path / name.replace("shard0", "shard1"))
    assert retrieve(dict(world, emb=str(tmp_path / "emb_shard*.npy")), tmp_path / "r.json") == 2
    assert "emb_shard1.npy: passage vectors made by" in error_line(capsys)


# ----- a trained index is saved beside the embeddings and reused -----

def test_trained_index_is_saved_reused_and_rebuilt(world, tmp_path, monkeypatch, caplog):
    for name in ("emb_shard0", "emb_shard1"):
        for ext in (".npy", ".ids.txt", ".meta.json"):
            shutil.copy(world["root"] / f"{name}{ext}", tmp_path / f"{name}{ext}")
    w = dict(world, emb=str(tmp_path / "emb_shard*.npy"))
    assert retrieve(w, tmp_path / "a.json", "--index_type", "hnsw") == 0
    saved = tmp_path / "emb.index.HNSW32_Flat.faiss"
    assert saved.is_file() and (tmp_path / "emb.index.HNSW32_Flat.faiss.meta.json").is_file()

    from dpr.index import search
    monkeypatch.setattr(search, "build_index", lambda *a: pytest.fail("the saved index was not reused"))
    with caplog.at_level(logging.INFO):
        assert retrieve(w, tmp_path / "b.json", "--index_type", "hnsw") == 0
    assert "reusing" in caplog.text
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    for again in (["--rebuild_index"], ["--ef_construction", "40"]):  # forced, or built with other parameters
        with pytest.raises(BaseException, match="the saved index was not reused"):
            retrieve(w, tmp_path / "c.json", "--index_type", "hnsw", *again)
    monkeypatch.undo()
    mtime = saved.stat().st_mtime_ns
    assert retrieve(w, tmp_path / "c.json", "--index_type", "hnsw", "--ef_construction", "40") == 0
    assert saved.stat().st_mtime_ns != mtime  # rebuilt and saved for the new parameters


def test_flat_and_windowed_search_save_no_index(world, tmp_path):
    for name in ("emb_shard0", "emb_shard1"):
        for ext in (".npy", ".ids.txt", ".meta.json"):
            shutil.copy(world["root"] / f"{name}{ext}", tmp_path / f"{name}{ext}")
    w = dict(world, emb=str(tmp_path / "emb_shard*.npy"))
    assert retrieve(w, tmp_path / "a.json") == 0
    assert retrieve(w, tmp_path / "b.json", "--index_type", "hnsw", "--search_shard_size", "10") == 0
    assert not list(tmp_path.glob("*.faiss"))
    with pytest.raises(SystemExit):
        dr.parse_args(["--qa_file", "q", "--encoded_ctx_file", "e", "--out_file", "o", "--rebuild_index",
                       "--search_shard_size", "10"])


def expected_hybrid(world, config):
    """Dense (brute force with the two towers) and BM25 (an index built here) lists fused with dpr.retrieval.hybrid."""
    from dpr.data.bm25 import BM25Index, TokenizedCorpus
    from dpr.retrieval.hybrid import fuse

    tok = tiny_tokenizer()
    q = encode_texts(Encoder.from_pretrained(world["model"] / "question_encoder"), tok, world["questions"], "query", 32)
    p = encode_texts(Encoder.from_pretrained(world["model"] / "passage_encoder"), tok,
                     [t for _, t in world["passages"]], "passage", 64)
    scores = q @ p.T
    ids = [pid for pid, _ in world["passages"]]
    bm25 = BM25Index(TokenizedCorpus.build([t for _, t in world["passages"]])).search(world["questions"], config.depth)
    fused = []
    for row, b in zip(scores, bm25):
        order = np.argsort(-row, kind="stable")[:config.depth]
        fused.append(fuse([(ids[j], float(row[j])) for j in order], [(ids[d], s) for d, s in b], config)[:N_DOCS])
    return fused


@pytest.mark.parametrize("extra, config", [
    (["--hybrid_alpha", "0.3"], dict(alpha=0.3)),
    (["--hybrid_alpha", "0.3", "--hybrid_depth", "2"], dict(alpha=0.3, depth=2)),
    (["--hybrid_alpha", "--fusion", "rrf"], dict(method="rrf")),  # alone: the default alpha
])
def test_hybrid_writes_the_fused_ranking_with_both_scores(world, tmp_path, extra, config):
    from dpr.retrieval.hybrid import FusionConfig

    assert retrieve(world, tmp_path / "res.json", *extra) == 0
    expected = expected_hybrid(world, FusionConfig(**config))
    sub = json.loads((tmp_path / "res.json").read_text(encoding="utf-8"))
    assert sub == {f"q{n}": [h.pid for h in hits] for n, hits in enumerate(expected)}
    if config.get("depth") == 2:
        assert all(len(v) <= 4 for v in sub.values())
    rerank = [json.loads(line) for line in (tmp_path / "res.rerank.jsonl").read_text(encoding="utf-8").splitlines()]
    for r, hits in zip(rerank, expected):
        for got, h in zip(r["passages"], hits):
            assert got["score"] == pytest.approx(h.score, abs=1e-5)
            for side in ("dense_score", "bm25_score"):
                want = getattr(h, side)
                assert (got[side] is None) if want is None else got[side] == pytest.approx(want, abs=1e-4)
    if config.get("depth") == 2:  # a passage from one side only is kept, its other score null
        assert any(None in (p["bm25_score"], p["dense_score"]) for r in rerank for p in r["passages"])
    metrics = json.loads((tmp_path / "res.metrics.json").read_text())
    gold = {f"q{n}": {world["passages"][i][0]} for n, i in enumerate(world["golds"])}
    assert {k: v for k, v in metrics.items() if k != "extra"} == evaluate(gold, sub)
    assert (world["root"] / "passages.jieba" / "index" / "meta.json").is_file()  # the BM25 index, kept for reuse


def test_hybrid_alpha_one_is_dense_and_zero_is_bm25(world, tmp_path):
    from dpr.data.bm25 import BM25Index, TokenizedCorpus

    assert retrieve(world, tmp_path / "dense.json") == 0
    assert retrieve(world, tmp_path / "a1.json", "--hybrid_alpha", "1") == 0
    dense = json.loads((tmp_path / "dense.json").read_text())
    assert json.loads((tmp_path / "a1.json").read_text()) == dense  # every passage is in the dense top 100
    assert retrieve(world, tmp_path / "a0.json", "--hybrid_alpha", "0") == 0
    bm25 = BM25Index(TokenizedCorpus.build([t for _, t in world["passages"]])).search(world["questions"], N_DOCS)
    fused = json.loads((tmp_path / "a0.json").read_text())
    checked = 0
    for n, b in enumerate(bm25):
        top = [world["passages"][d][0] for d, s in b if s > b[-1][1]]  # above the BM25 list's minimum
        assert fused[f"q{n}"][:len(top)] == top
        checked += len(top)
    assert checked >= 12
    assert fused != dense


@pytest.mark.parametrize("argv, message", [
    (["--fusion", "rrf"], "need --hybrid_alpha"),
    (["--hybrid_depth", "5"], "need --hybrid_alpha"),
    (["--hybrid_alpha", "1.5"], "within [0, 1]"),
])
def test_hybrid_flag_errors(world, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        retrieve(world, tmp_path / "res.json", *argv)
    assert message in capsys.readouterr().err


def test_hybrid_needs_the_passage_texts(world, tmp_path, capsys):
    with pytest.raises(SystemExit):
        dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
                 "--encoded_ctx_file", world["emb"], "--out_file", str(tmp_path / "r.json"), "--hybrid_alpha", "0.5"])
    assert "--hybrid_alpha needs --ctx_file" in capsys.readouterr().err


# ----- one question from the shell: --query, the prompt, --index_dir -----

def ask(world, *extra, index_dir=None):
    return dr.main(["--model_file", str(world["model"]), "--index_dir", str(index_dir or world["root"]),
                    "--ctx_file", str(world["ctx"]), "--fp32", *extra])


def printed(out: str) -> list[list[str]]:
    """[rank, score, id, text] per printed line."""
    return [line.split(maxsplit=3) for line in out.splitlines()]


def test_query_prints_the_top_passages_with_scores(world, capsys):
    ranking, scores = expected_ranking(world)
    assert ask(world, "--query", world["questions"][2], "--n_docs", "3") == 0
    rows = printed(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["1", "2", "3"] and [r[2] for r in rows] == ranking[2][:3]
    np.testing.assert_allclose([float(r[1]) for r in rows], scores[2][:3], atol=1e-4)
    texts = dict(world["passages"])
    assert rows[0][3] == texts[ranking[2][0]]  # short enough to print whole, on one line


def test_query_with_hybrid_prints_the_fused_ranking(world, capsys):
    from dpr import Retriever

    assert ask(world, "--query", world["questions"][0], "--n_docs", "4", "--hybrid_alpha", "0.2",
               "--hybrid_depth", "6") == 0
    rows = printed(capsys.readouterr().out)
    hits = Retriever.load(world["model"], world["root"], world["ctx"], precision="fp32").search(
        world["questions"][0], 4, hybrid_alpha=0.2, hybrid_depth=6)
    assert [r[2] for r in rows] == [h.pid for h in hits] != expected_ranking(world)[0][0][:4]


def test_prompt_answers_each_line_until_an_empty_one(world, capsys, monkeypatch):
    import io

    ranking, _ = expected_ranking(world)
    q = world["questions"]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{q[0]}\n{q[1]}\n\n{q[3]}\n"))
    assert ask(world, "--interactive", "--n_docs", "2") == 0
    rows = printed(capsys.readouterr().out)
    assert [r[2] for r in rows] == ranking[0][:2] + ranking[1][:2]  # the line after the empty one is not asked
    with pytest.raises(SystemExit):  # stdin is no terminal here: without --interactive, --qa_file is required
        dr.parse_args(["--index_dir", str(world["root"])])


def test_query_over_vectors_of_another_model_is_one_error_line(world, b_vectors, capsys):
    _, emb_b = b_vectors
    assert ask(world, "--query", "北京", index_dir=Path(emb_b).parent) == 2
    captured = capsys.readouterr()
    assert "do not pair with the question tower of" in error_line_of(captured.err) and captured.out == ""


def error_line_of(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    return errors[0]


def test_index_dir_is_the_embeddings_glob_inside_it(world, tmp_path):
    assert retrieve(world, tmp_path / "a.json") == 0
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["root"] / "dev.json"),
                    "--index_dir", str(world["root"]), "--out_file", str(tmp_path / "b.json"), "--n_docs",
                    str(N_DOCS), "--fp32"]) == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    for bad in (["--query", "x", "--out_file", "o"], ["--encoded_ctx_file", "e"], ["--query", " "]):
        with pytest.raises(SystemExit):
            dr.parse_args(["--index_dir", str(world["root"]), *bad])


def test_num_threads_one_for_questions_from_the_shell_torchs_default_in_batch(world, tmp_path, monkeypatch, capsys):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert ask(world, "--query", world["questions"][0], "--n_docs", "1") == 0
    assert ask(world, "--query", world["questions"][0], "--n_docs", "1", "--num_threads", "3") == 0
    assert calls == [1, 3]
    assert retrieve(world, tmp_path / "a.json") == 0
    assert calls == [1, 3]
    assert retrieve(world, tmp_path / "b.json", "--num_threads", "2") == 0
    assert calls == [1, 3, 2]


# ----- vectors that belong together: settings, coverage, stale inputs, older records, DPR globs -----

def copy_shards(world, into, shards=(0, 1)):
    for k in shards:
        for ext in (".npy", ".ids.txt", ".meta.json"):
            shutil.copy(world["root"] / f"emb_shard{k}{ext}", into / f"emb_shard{k}{ext}")
    return str(into / "emb_shard*.npy")


def test_passages_encoded_with_other_settings_than_the_search_are_refused(world, tmp_path, capsys):
    """The tiny model stores mean pooling and the prefixes 问 / 文: passages encoded with --pooling cls (or searched
    with another passage prefix) do not pair, naming both sides; the search with the same flags does."""
    assert gen.main(["--model_file", str(world["model"]), "--ctx_file", str(world["ctx"]), "--out_file",
                     str(tmp_path / "cls"), "--p_sequence_length", "64", "--pooling", "cls", "--fp32"]) == 0
    cls = dict(world, emb=str(tmp_path / "cls_shard*.npy"))
    capsys.readouterr()
    assert retrieve(cls, tmp_path / "r.json") == 2
    line = error_line(capsys)
    assert "cls_shard0.npy: passage vectors encoded with pooling 'cls' do not pair with the question tower of" in line
    assert "which uses pooling 'mean'" in line and not (tmp_path / "r.json").exists()
    assert retrieve(cls, tmp_path / "r.json", "--pooling", "cls") == 0
    assert retrieve(cls, tmp_path / "r.json", "--allow_mismatched_vectors") == 0
    capsys.readouterr()
    assert retrieve(world, tmp_path / "p.json", "--passage_prefix", "") == 2
    assert "encoded with passage_prefix '文' do not pair with the question tower of" in error_line(capsys)
    assert retrieve(world, tmp_path / "q.json", "--query_prefix", "") == 0  # the question side's own prefix


def test_saved_question_vectors_carry_their_settings_and_length(world, tmp_path, capsys):
    qpath = tmp_path / "q.npy"
    dev = str(world["root"] / "dev.json")
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", dev, "--q_encoding_path", str(qpath),
                    "--encode_q_and_save", "--q_sequence_length", "16"]) == 0
    saved = ["--qa_file", dev, "--q_encoding_path", str(qpath), "--encoded_ctx_file", world["emb"],
             "--out_file", str(tmp_path / "r.json")]
    capsys.readouterr()
    assert dr.main(saved) == 2
    assert "q.npy: the saved question vectors were encoded with max_length 16 but this run asks for max_length 32" \
        in error_line(capsys)
    assert dr.main(saved + ["--q_sequence_length", "16", "--pooling", "cls"]) == 2
    assert "pooling 'mean' but this run asks for pooling 'cls'" in error_line(capsys)
    assert dr.main(saved + ["--q_sequence_length", "16", "--passage_prefix", ""]) == 2
    assert "encoded with passage_prefix '文' do not pair with the saved question vectors" in error_line(capsys)
    assert dr.main(saved + ["--q_sequence_length", "16"]) == 0
    assert dr.main(saved + ["--allow_mismatched_vectors"]) == 0


def test_saved_question_vectors_are_keyed_on_the_texts_too(world, tmp_path, capsys):
    """DPR files without question ids get positional ids 0, 1, ...: another file of as many questions has the same
    ids, and its own texts."""
    def dpr_file(path, questions):
        path.write_text(json.dumps([{"question": q, "answers": [], "positive_ctxs": []} for q in questions],
                                   ensure_ascii=False), encoding="utf-8")
        return str(path)

    a = dpr_file(tmp_path / "a.json", ["中国的首都", "北京大学"])
    b = dpr_file(tmp_path / "b.json", ["人民大会", "学生学习"])
    qpath = tmp_path / "q.npy"
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", a, "--q_encoding_path", str(qpath),
                    "--encode_q_and_save"]) == 0
    capsys.readouterr()
    search = ["--q_encoding_path", str(qpath), "--encoded_ctx_file", world["emb"], "--out_file",
              str(tmp_path / "r.json")]
    assert dr.main(["--qa_file", b, *search]) == 2
    assert "q.npy.meta.json: saved for 2 questions with these ids but other texts" in error_line(capsys)
    assert dr.main(["--qa_file", a, *search]) == 0


@pytest.mark.parametrize("missing", [1, 2])
def test_shards_must_cover_the_collection(world, tmp_path, capsys, missing):
    """3 shards of 30 passages, one deleted (the last one included: the records hold the collection's total)."""
    root = world["root"]
    for k in range(3):
        assert gen.main(["--model_file", str(world["model"]), "--ctx_file", str(world["ctx"]), "--out_file",
                         str(tmp_path / "emb"), "--shard_id", str(k), "--num_shards", "3", "--p_sequence_length",
                         "64", "--fp32"]) == 0
    for ext in (".npy", ".ids.txt", ".meta.json"):
        (tmp_path / f"emb_shard{missing}{ext}").unlink()
    three = dict(world, emb=str(tmp_path / "emb_shard*.npy"))
    capsys.readouterr()
    assert retrieve(three, tmp_path / "r.json") == 2
    line = error_line(capsys)
    rows = "[10, 20)" if missing == 1 else "[20, 30)"
    assert f"the shards cover 20 of 30 passages: rows {rows} of {world['ctx']} (shard {missing} of 3) are missing" \
        in line
    assert f"--shard_id {missing} --num_shards 3" in line and "--allow_partial_index" in line
    assert not (tmp_path / "r.json").exists()
    assert retrieve(three, tmp_path / "r.json", "--allow_partial_index") == 0
    found = {pid for pids in json.loads((tmp_path / "r.json").read_text()).values() for pid in pids}
    assert found and not found & {pid for pid, _ in world["passages"][missing * 10:(missing + 1) * 10]}
    assert root.is_dir()


def test_a_record_of_an_older_version_is_one_line_in_both_scripts(world, tmp_path, capsys, monkeypatch):
    emb = copy_shards(world, tmp_path)
    record = tmp_path / "emb_shard0.meta.json"
    data = json.loads(record.read_text())
    data["format"] = 1
    data["rows"].pop("total")
    data["source"] = {"size": data["source"]["size"], "sample_sha256": "0" * 64}
    record.write_text(json.dumps(data))
    capsys.readouterr()
    assert retrieve(dict(world, emb=emb), tmp_path / "r.json") == 2
    line = error_line(capsys)
    assert "emb_shard0.npy: its record (emb_shard0.meta.json) was made by an older version" in line
    assert "--allow_mismatched_vectors" in line
    assert retrieve(dict(world, emb=emb), tmp_path / "r.json", "--allow_mismatched_vectors") == 0

    encode = ["--model_file", str(world["model"]), "--ctx_file", str(world["ctx"]), "--out_file",
              str(tmp_path / "emb"), "--shard_id", "0", "--num_shards", "2", "--p_sequence_length", "64", "--fp32"]
    monkeypatch.setattr(passage_shards, "load_passage_encoder", lambda *a: pytest.fail("re-encoding without being asked"))
    capsys.readouterr()
    assert gen.main(encode) == 2
    assert "emb_shard0.meta.json: made by an older version" in error_line(capsys)
    monkeypatch.undo()
    assert gen.main(encode + ["--overwrite"]) == 0
    assert json.loads(record.read_text())["rows"]["total"] == 30


def test_a_dpr_glob_that_matches_side_files_selects_the_shards(world, tmp_path):
    copy_shards(world, tmp_path)
    assert retrieve(world, tmp_path / "a.json") == 0
    assert retrieve(dict(world, emb=str(tmp_path / "emb_*")), tmp_path / "b.json") == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    assert retrieve(dict(world, emb=str(tmp_path / "emb_*")), tmp_path / "h.json", "--index_type", "hnsw") == 0
    assert list(tmp_path.glob("emb.index.*.faiss.meta.json"))  # a saved index and its record: matched by emb*
    assert retrieve(dict(world, emb=str(tmp_path / "emb*")), tmp_path / "c.json", "--index_type", "hnsw") == 0
    assert (tmp_path / "h.json").read_text() == (tmp_path / "c.json").read_text()


def test_the_missing_shard_command_pairs_and_each_mismatch_names_its_fields(world, tmp_path, capsys):
    """Shards made with non-default encoder flags, shard 1 missing: the command the message suggests, run as printed,
    encodes a shard that pairs with the others (it carried only the model, source and split, so the shard it made
    was refused). A shard made otherwise names each differing field with both values; settings that search-time
    flags would pair with are named as such flags."""
    made_with = ["--pooling", "cls", "--do_lower_case", "--passage_prefix", "段 ", "--save_fp16", "--p_sequence_length",
                 "48"]

    def encode(k, *flags):
        assert gen.main(["--model_file", str(world["model"]), "--ctx_file", str(world["ctx"]), "--out_file",
                         str(tmp_path / "emb"), "--shard_id", str(k), "--num_shards", "3", "--fp32", *flags]) == 0

    for k in (0, 2):
        encode(k, *made_with)
    three = dict(world, emb=str(tmp_path / "emb_shard*.npy"))
    pairing = ["--pooling", "cls", "--do_lower_case", "--passage_prefix", "段 "]
    capsys.readouterr()
    assert retrieve(three, tmp_path / "r.json", *pairing) == 2
    line = error_line(capsys)
    command = shlex.split(line.split("Encode them with `")[1].split("`")[0])
    assert command[0] == "generate_dense_embeddings.py"
    assert gen.main(command[1:]) == 0  # as printed
    assert retrieve(three, tmp_path / "r.json", *pairing) == 0
    # without the flags: the settings that differ, with both values, and the flags that pair
    capsys.readouterr()
    assert retrieve(three, tmp_path / "r.json") == 2
    line = error_line(capsys)
    assert "emb_shard0.npy: passage vectors encoded with pooling 'cls', lowercase True, passage_prefix '段 ' do not " \
           "pair with the question tower of" in line
    assert "which uses pooling 'mean', lowercase False, passage_prefix '文'" in line
    assert "Search with `--pooling cls --do_lower_case --passage_prefix '段 '` (Retriever.load: pooling='cls', " \
           "lowercase=True, passage_prefix='段 ') to pair with them" in line
    # a shard made with another length cap: the field, both values, and the command that makes it as shard 0 was
    encode(1, *made_with[:-1], "64", "--overwrite")
    capsys.readouterr()
    assert retrieve(three, tmp_path / "r.json", *pairing) == 2
    line = error_line(capsys)
    assert "emb_shard1.npy: encoded otherwise than emb_shard0.npy: length cap (max_length) 64 vs 48 (this shard vs " \
           "emb_shard0.npy). Re-encode it as emb_shard0.npy was: `generate_dense_embeddings.py" in line
    gen.main(shlex.split(line.split("was: `")[1].split("`")[0])[1:] + ["--overwrite"])
    assert retrieve(three, tmp_path / "r.json", *pairing) == 0

