"""Every index flag of dense_retriever.py changes the index searched (flag audit, issue 10 defect 1 / issue 11)."""
import faiss
import numpy as np
import pytest

import dense_retriever as dr
from dpr.index.embeddings import open_shards, save_shard
from dpr.index.search import SavedIndexPolicy, build_full_index
from dpr.options import NO_EFFECT
from tests.index.fake_gpu import FakeGpu

BASE = ["--qa_file", "q", "--encoded_ctx_file", "e", "--out_file", "o"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags")
    save_shard(d / "e_shard0", [f"d{i}" for i in range(3000)],
               np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32))
    return open_shards(str(d / "e_shard0.npy"))


def built(shards, *flags):
    spec = dr.index_spec(dr.parse_args(BASE + list(flags)))
    return build_full_index(shards, spec, SavedIndexPolicy(save=False)).index


def test_hnsw_flags(shards):
    index = built(shards, "--hnsw_index", "--hnsw_m", "8", "--ef_construction", "33", "--ef_search", "44")
    h = faiss.downcast_index(index).hnsw
    assert (h.nb_neighbors(1), h.efConstruction, h.efSearch) == (8, 33, 44)
    index = built(shards, "--index_type", "hnsw")
    assert faiss.downcast_index(index).hnsw.nb_neighbors(1) == 32


def test_ivf_flags(shards):
    index = built(shards, "--index_type", "ivfpq", "--nlist", "20", "--pq_m", "4", "--nprobe", "7")
    ivf = faiss.extract_index_ivf(index)
    assert (ivf.nlist, faiss.downcast_index(ivf).pq.M, ivf.nprobe) == (20, 4, 7)
    index = built(shards, "--index_factory", "IVF10,PQ2x4np,RFlat", "--nprobe", "3", "--refine_k_factor", "5")
    assert faiss.downcast_index(index).k_factor == 5 and faiss.extract_index_ivf(index).nprobe == 3


def test_gpu_flags(monkeypatch, shards):
    gpu = FakeGpu(monkeypatch, ngpu=2)
    assert dr.index_spec(dr.parse_args(BASE)).use_gpu
    assert not dr.index_spec(dr.parse_args(BASE + ["--faiss_cpu"])).use_gpu
    built(shards, "--faiss_fp16", "--faiss_shard")
    assert {c["fp16"] for c in gpu.clones} == {True} and {c["device"] for c in gpu.clones} == {0}  # 1 piece
    gpu.clones.clear()
    built(shards)
    assert {c["fp16"] for c in gpu.clones} == {False}


def test_output_path_flags():
    args = dr.parse_args(BASE + ["--rerank_file", "r.jsonl", "--metrics_file", "m.json"])
    assert [str(p) for p in dr.output_paths(args)] == ["o", "r.jsonl", "m.json"]


@pytest.mark.parametrize("flag", ["--validation_workers", "--index_buffer", "--dureader_test",
                                  "--p_sequence_length", "--encoder_model_type"])
def test_flags_without_effect_say_so(flag, monkeypatch):
    import argparse

    parsers = []
    real = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", lambda self, *a: parsers.append(self) or real(self, *a))
    dr.parse_args(BASE)
    [action] = [a for a in parsers[0]._actions if flag in a.option_strings]
    assert action.help.startswith(NO_EFFECT)
