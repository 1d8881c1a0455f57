"""The library path of dense_retriever.py: RetrievalConfig (its rules without argparse), run_batch(config), and
the options it shares with the Retriever (windowed search, given question vectors, fusion defaults)."""
import json

import numpy as np
import pytest

import dense_retriever as dr
from dpr.retrieval.batch import run_batch
from dpr.retrieval.config import RetrievalConfig
from dpr.retrieval.hybrid import FusionConfig
from dpr.retrieval.query_cache import load_question_vectors
from tests.retrieval.test_retriever import K, load, world  # noqa: F401 (world: the fixture)


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
