"""The Python API ranks as dense_retriever.py does (dense and hybrid), keeps its index, loads one tower over a saved
index, refuses vectors of another model, and builds (and saves) an index from a passages.tsv."""
import json
import shutil

import numpy as np
import pytest

import dense_retriever as dr
import generate_dense_embeddings as gen
from dpr import Hit, Retriever
from dpr.encode import encode_texts
from dpr.index.records import VectorsMismatchError, identity, read_record
from dpr.models.encoder import Encoder, EncoderSettings
from dpr.retrieval import dense
from dpr.retrieval import retriever as api
from dpr.retrieval.batch import run_batch
from dpr.retrieval.config import RetrievalConfig
from dpr.retrieval.hybrid import FusionConfig
from dpr.retrieval.query_cache import load_question_vectors
from dpr.utils.io import InputError
from tests.tiny_encoder import random_passages, save_tiny_biencoder, tiny_bert, tiny_tokenizer, write_passages_tsv

K = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model, 24 passages in two shards under emb/, and four questions cut from passages."""
    root = tmp_path_factory.mktemp("api")
    model = save_tiny_biencoder(root / "model")
    passages = [(f"p{i}", t) for i, (_, t) in enumerate(random_passages(24, seed=3))]
    ctx = write_passages_tsv(root / "passages.tsv", passages)
    for k in range(2):
        assert gen.main(["--model_file", str(model), "--ctx_file", str(ctx), "--out_file", str(root / "emb" / "emb"),
                         "--shard_id", str(k), "--num_shards", "2", "--p_sequence_length", "64", "--fp32"]) == 0
    questions = [passages[i][1][:10] for i in (1, 7, 12, 20)]
    qa = root / "q.tsv"
    qa.write_text("".join(f"q{n}\t{q}\n" for n, q in enumerate(questions)), encoding="utf-8")
    return {"root": root, "model": model, "ctx": ctx, "passages": dict(passages), "questions": questions, "qa": qa,
            "index": root / "emb"}


def script_rerank(world, out, *extra):
    """dense_retriever.py batch mode over --index_dir: the rerank file's passages per question."""
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["qa"]), "--ctx_file",
                    str(world["ctx"]), "--index_dir", str(world["index"]), "--out_file", str(out / "r.json"),
                    "--n_docs", str(K), "--fp32", *extra]) == 0
    return [json.loads(line)["passages"] for line in (out / "r.rerank.jsonl").read_text(encoding="utf-8").splitlines()]


def load(world, **kw):
    return Retriever.load(world["model"], world["index"], world["ctx"], precision="fp32", **kw)


def test_api_ranks_as_dense_retriever(world, tmp_path):
    expected = script_rerank(world, tmp_path)
    got = load(world).search(world["questions"], k=K)
    assert len(got) == 4
    for hits, exp in zip(got, expected):
        assert all(isinstance(h, Hit) for h in hits)
        assert [h.pid for h in hits] == [p["passage_id"] for p in exp]
        np.testing.assert_allclose([h.score for h in hits], [p["score"] for p in exp], atol=1e-5)
        assert [h.text for h in hits] == [world["passages"][h.pid] for h in hits] == [p["text"] for p in exp]
    one = load(world).search(world["questions"][0], k=K)  # one question: a list of hits, not a list of lists
    assert [h.pid for h in one] == [h.pid for h in got[0]]


def test_api_hybrid_equals_dense_retriever_hybrid(world, tmp_path):
    expected = script_rerank(world, tmp_path, "--hybrid_alpha", "0.3", "--hybrid_depth", "8")
    got = load(world).search(world["questions"], k=K, hybrid_alpha=0.3, hybrid_depth=8)
    dense_only = load(world).search(world["questions"], k=K)
    assert [[h.pid for h in hits] for hits in got] != [[h.pid for h in hits] for hits in dense_only]
    for hits, exp in zip(got, expected):
        assert [h.pid for h in hits] == [p["passage_id"] for p in exp]
        np.testing.assert_allclose([h.score for h in hits], [p["score"] for p in exp], atol=1e-5)
        assert [h.bm25_score for h in hits] == [p["bm25_score"] for p in exp]
        assert [h.dense_score is None for h in hits] == [p["dense_score"] is None for p in exp]


def test_repeated_questions_build_the_index_once_and_load_only_the_question_tower(world, monkeypatch):
    builds, needs = [], []
    real_build = dense.build_full_index
    monkeypatch.setattr(dense, "build_full_index", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    import dpr.models.loading as loading
    real_load = loading.load_towers
    monkeypatch.setattr(loading, "load_towers", lambda options, need="both": needs.append(need) or
                        real_load(options, need))
    r = load(world)
    for q in world["questions"] * 2:
        r.search(q, k=3)
    assert builds == [1] and needs == ["question"]
    assert r.encode_queries(world["questions"]).shape == (4, 32)
    assert needs == ["question"]
    vectors = r.encode_passages(["北京", "上海"], titles=["", "城市"])
    assert needs == ["question", "passage"] and vectors.shape == (2, 32)
    tower = Encoder.from_pretrained(world["model"] / "passage_encoder")
    np.testing.assert_allclose(vectors, encode_texts(tower, tiny_tokenizer(), ["北京", "城市 上海"], "passage", 384),
                               atol=1e-5)


def test_index_of_another_model_is_refused(world, tmp_path):
    other = tmp_path / "other"
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="问", passage_prefix="文")
    for seed, name in ((5, "question_encoder"), (6, "passage_encoder")):
        Encoder(tiny_bert(seed), settings).save_pretrained(other / name, tiny_tokenizer())
    with pytest.raises(VectorsMismatchError, match="do not pair with the question tower of"):
        Retriever.load(other, world["index"], world["ctx"])
    assert len(Retriever.load(other, world["index"], allow_mismatched_vectors=True)) == 24
    bare = tmp_path / "bare"  # vectors without their records cannot be checked: refused too
    bare.mkdir()
    for f in world["index"].glob("emb_shard*"):
        if not f.name.endswith(".meta.json"):
            shutil.copy(f, bare / f.name)
    with pytest.raises(VectorsMismatchError, match="has no record"):
        Retriever.load(world["model"], bare)


def test_passages_of_another_collection_are_refused(world, tmp_path):
    other = write_passages_tsv(tmp_path / "other.tsv", [("p0", "甲"), ("x1", "乙")])
    with pytest.raises(InputError, match="other.tsv: is not the passages file the passage vectors were encoded from"):
        load(dict(world, ctx=other))  # the records name their source (size + hash)
    with pytest.raises(InputError, match="other.tsv: passage id 'p1' .* is not in this file"):
        load(dict(world, ctx=other), allow_mismatched_vectors=True)  # overridden: the ids still must be there


def test_index_built_from_passages_ranks_alike_and_saves_what_generate_dense_embeddings_writes(world, tmp_path):
    in_memory = Retriever.load(world["model"], passages=world["ctx"], precision="fp32", passage_max_length=64)
    saved_dir = tmp_path / "built"
    saved_dir.mkdir()
    saving = Retriever.load(world["model"], saved_dir, world["ctx"], precision="fp32", passage_max_length=64)
    expected = load(world).search(world["questions"], k=K)
    for r in (in_memory, saving):
        got = r.search(world["questions"], k=K)
        assert [[h.pid for h in hits] for hits in got] == [[h.pid for h in hits] for hits in expected]
        np.testing.assert_allclose([[h.score for h in hits] for hits in got],
                                   [[h.score for h in hits] for hits in expected], atol=1e-5)
    assert sorted(p.name for p in saved_dir.iterdir()) == ["emb_shard0.ids.txt", "emb_shard0.meta.json",
                                                          "emb_shard0.npy"]
    ref = tmp_path / "ref"  # the script's record for the same collection in one shard
    assert gen.main(["--model_file", str(world["model"]), "--ctx_file", str(world["ctx"]), "--out_file",
                     str(ref / "emb"), "--p_sequence_length", "64", "--fp32"]) == 0
    assert identity(read_record(saved_dir / "emb_shard0.npy")) == identity(read_record(ref / "emb_shard0.npy"))
    reloaded = Retriever.load(world["model"], saved_dir, world["ctx"], precision="fp32")  # now a saved index
    assert reloaded._built is None and [h.pid for h in reloaded.search(world["questions"][1], k=K)] == [
        h.pid for h in expected[1]]


def test_answer_lines_stop_at_an_empty_line(world):
    r = load(world)
    answered = list(api.answer_lines(r, [world["questions"][0] + "\n", "  " + world["questions"][1], "\n",
                                         world["questions"][2]], k=2))
    assert [q for q, _ in answered] == world["questions"][:2] and all(len(h) == 2 for _, h in answered)


def test_an_encoder_only_retriever_encodes_and_search_says_what_it_lacks(world):
    # neither index_dir nor passages: it was refused, though encoding needs neither (SentenceTransformer.encode users)
    r = Retriever.load(world["model"], precision="fp32")
    indexed = load(world)
    assert np.array_equal(r.encode_queries(["北京", "大学"]), indexed.encode_queries(["北京", "大学"]))
    assert np.array_equal(r.encode_passages("北京大学"), indexed.encode_passages("北京大学"))
    assert len(r) == 0
    for call in (lambda: r.search("x"), lambda: r.rank(["x"]), lambda: r.search("x", hybrid_alpha=0.5)):
        with pytest.raises(ValueError, match="^this Retriever was loaded without index_dir or passages: it encodes"):
            call()


def test_load_needs_a_positive_k_and_passages_for_hybrid(world):
    with pytest.raises(ValueError, match="k must be"):
        load(world).search("x", k=0)
    with pytest.raises(ValueError, match="passages="):
        Retriever.load(world["model"], world["index"]).search("x", hybrid_alpha=0.5)


def test_import_dpr_stays_cheap():
    import subprocess
    import sys

    code = ("import sys, dpr; assert 'torch' not in sys.modules and 'faiss' not in sys.modules; "
            "from dpr import Retriever, Hit; assert 'torch' not in sys.modules; print(Retriever.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "dpr.retrieval.retriever", r.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import dpr
        dpr.Nope


def test_a_missing_index_dir_is_one_line_saying_so(world, tmp_path):
    with pytest.raises(InputError, match=r"missing_dir: no such directory or embeddings file$"):
        Retriever.load(world["model"], index_dir=tmp_path / "missing_dir")


def test_the_api_checks_settings_and_coverage_too(world, tmp_path):
    with pytest.raises(VectorsMismatchError, match="encoded with pooling 'mean' do not pair with the question tower "
                                                   ".* which uses pooling 'cls'"):
        load(world, pooling="cls")
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in world["index"].glob("emb_shard1*"):
        shutil.copy(f, partial / f.name)
    with pytest.raises(InputError, match=r"the shards cover 12 of 24 passages: rows \[0, 12\)"):
        Retriever.load(world["model"], partial, world["ctx"])
    assert len(Retriever.load(world["model"], partial, world["ctx"], allow_partial_index=True)) == 12


# ----- the library path of dense_retriever.py: RetrievalConfig's rules without argparse, run_batch(config), and the
# options it shares with the Retriever (windowed search, given question vectors, fusion defaults)


def test_the_config_checks_its_rules_without_argparse():
    with pytest.raises(ValueError, match="--encoded_ctx_file \\(or --index_dir\\) is required"):
        RetrievalConfig(qa_file="q", out_file="o")
    with pytest.raises(ValueError, match="--hybrid_alpha needs --ctx_file"):
        RetrievalConfig(qa_file="q", index_dir="d", out_file="o", hybrid_alpha=0.5)
    with pytest.raises(ValueError, match="--fusion and --hybrid_depth need --hybrid_alpha"):
        RetrievalConfig(qa_file="q", index_dir="d", out_file="o", hybrid_depth=5)
    config = RetrievalConfig(qa_file="q", index_dir="d", out_file="o", ctx_file="c", hybrid_alpha=0.5, n_docs=200)
    assert config.fusion_config == FusionConfig(alpha=0.5)  # the defaults are FusionConfig's, nowhere else
    assert config.search_depth == 200 and config.embeddings.endswith("emb_shard*.npy")


def test_run_batch_is_the_script_without_the_command_line(world, tmp_path):
    common = ["--model_file", str(world["model"]), "--qa_file", str(world["qa"]), "--index_dir", str(world["index"]),
              "--n_docs", str(K), "--fp32"]
    assert dr.main(common + ["--out_file", str(tmp_path / "a.json")]) == 0
    config = RetrievalConfig(model_file=str(world["model"]), qa_file=str(world["qa"]), index_dir=str(world["index"]),
                             n_docs=K, precision="fp32", out_file=str(tmp_path / "b.json"))
    results = run_batch(config)
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    assert [r.pids for r in results] == list(json.loads((tmp_path / "a.json").read_text()).values())


def test_retriever_windowed_search_and_given_vectors_rank_as_the_index(world, tmp_path):
    whole = load(world).rank(world["questions"], k=K)
    windowed = load(world, search_shard_size=5)  # 24 passages: five windows
    assert [r.pids for r in windowed.rank(world["questions"], k=K)] == [r.pids for r in whole]
    q = tmp_path / "q.npy"
    assert dr.main(["--model_file", str(world["model"]), "--qa_file", str(world["qa"]), "--encode_q_and_save",
                    "--q_encoding_path", str(q), "--fp32"]) == 0
    saved = load_question_vectors(q, [f"q{n}" for n in range(4)])
    given = load(world).rank(world["questions"], k=K, vectors=saved)
    assert [r.pids for r in given] == [r.pids for r in whole]
    np.testing.assert_allclose([r.scores for r in given], [r.scores for r in whole], atol=1e-5)


def test_hybrid_keeps_the_only_passages_that_share_the_questions_words(world, tmp_path):
    # two of 20 passages contain 北京: BM25's list is those two (exhaustive), each worth (nearly) the whole BM25 weight,
    # so both lead the fused top 3 whatever the random model's dense order (min-max made the weaker worth 0)
    import random

    from tests.tiny_encoder import CHARS

    rng = random.Random(5)
    plain = [c for c in CHARS if c not in "北京"]
    passages = [(f"x{i}", "".join(rng.choices(plain, k=30))) for i in range(18)]
    passages += [("bj1", "北京" + "".join(rng.choices(plain, k=28))), ("bj2", "".join(rng.choices(plain, k=40)) + "北京")]
    ctx = write_passages_tsv(tmp_path / "passages.tsv", passages)
    r = Retriever.load(world["model"], passages=ctx, precision="fp32")
    hits = r.search("北京", k=3, hybrid_alpha=0.3)
    assert {h.pid for h in hits[:2]} == {"bj1", "bj2"}
    assert all(h.bm25_score is not None for h in hits[:2])


def test_the_library_path_applies_the_flags_positive_number_rules(world, tmp_path):
    # run_batch wrote a submission with 0 passages per question for search_shard_size=-1; n_docs 0 / -3 reached faiss
    base = dict(model_file=str(world["model"]), qa_file=str(world["qa"]), index_dir=str(world["index"]),
                precision="fp32", out_file=str(tmp_path / "b.json"))
    for field, value in (("search_shard_size", -1), ("n_docs", 0), ("n_docs", -3), ("batch_size", 0),
                         ("nprobe", 0), ("hybrid_depth", -1)):
        with pytest.raises(ValueError, match=f"^--{field}: must be a positive integer, got {value}$"):
            run_batch(RetrievalConfig(**{**base, field: value}))
    assert not (tmp_path / "b.json").exists()
    # the Retriever refuses at load, with the same rule (it returned [] from search)
    for field, value in (("search_shard_size", -1), ("batch_size", 0), ("num_threads", -2)):
        with pytest.raises(ValueError, match=f"^{field}: must be a positive integer, got {value}$"):
            load(world, **{field: value})
    with pytest.raises(ValueError, match="^index_spec.nprobe: must be a positive integer, got 0$"):
        load(world, index_spec=api.IndexSpec(nprobe=0))
    with pytest.raises(ValueError, match="^pooling: invalid choice 'first'"):
        load(world, pooling="first")


def test_ctx_file_must_be_the_file_the_shards_were_encoded_from(world, tmp_path, capsys):
    # a larger --ctx_file than the one encoded: hybrid search exited 0, ranking passages the dense index never held
    bigger = write_passages_tsv(tmp_path / "bigger.tsv", [*world["passages"].items(), ("extra", "北京大学")])
    args = ["--model_file", str(world["model"]), "--qa_file", str(world["qa"]), "--ctx_file", str(bigger),
            "--index_dir", str(world["index"]), "--out_file", str(tmp_path / "r.json"), "--n_docs", str(K), "--fp32",
            "--hybrid_alpha", "0.3"]
    assert dr.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bigger}: is not the passages file the passage vectors were "
                                               f"encoded from: emb_shard0.npy records {world['ctx']}, ")
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(InputError, match="is not the passages file"):
        Retriever.load(world["model"], world["index"], bigger, precision="fp32")
    # overridden: a warning, and a duplicated id is one error: FILE:LINE line, not a traceback
    doubled = write_passages_tsv(tmp_path / "doubled.tsv", [*world["passages"].items(), ("p3", "北京大学")])
    assert dr.main([*args[:5], str(doubled), *args[6:], "--allow_mismatched_vectors"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"error: {doubled}:26: passage id 'p3' appears twice"
    # the file that made them passes
    assert dr.main([*args[:5], str(world["ctx"]), *args[6:]]) == 0
