"""The GPU paths of index building, run on CPU with faiss's GPU functions stood in for (tests/index/fake_gpu.py)."""
import logging

import faiss
import numpy as np
import pytest

from dpr.index import faiss_index, search
from dpr.index.embeddings import open_shards, save_shard
from dpr.index.faiss_index import IndexBuildError, IndexSpec
from dpr.index.search import SavedIndexPolicy, build_full_index, search_shards
from tests.index.fake_gpu import FakeGpu, brute_force


def shards_of(tmp_path, n, dim=16, parts=2, seed=0):
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((n, dim)).astype(np.float32)
    bounds = np.linspace(0, n, parts + 1).astype(int)
    for k in range(parts):
        save_shard(tmp_path / f"emb_shard{k}", [f"d{i}" for i in range(bounds[k], bounds[k + 1])],
                   corpus[bounds[k]:bounds[k + 1]])
    return open_shards(str(tmp_path / "emb_shard*.npy")), corpus


def test_ivf_on_gpu_trains_on_enough_points_and_searches_with_the_nprobe_asked(tmp_path, monkeypatch, caplog):
    gpu = FakeGpu(monkeypatch)
    shards, corpus = shards_of(tmp_path, 20_000)
    sampled = []
    real_sample = search._sample_rows
    monkeypatch.setattr(search, "_sample_rows", lambda s, b, n, seed=0: sampled.append(n) or real_sample(s, b, n))
    spec = IndexSpec("ivfpq", nlist=64, pq_m=4, nprobe=16, use_gpu=True)
    with caplog.at_level(logging.INFO):
        built = build_full_index(shards, spec, SavedIndexPolicy(save=False))
    assert sampled == [256 * 64]  # faiss's points-per-centroid bound for 64 lists (not 10,000)
    kmeans = [c for c in gpu.clones if c["kind"] == "IndexFlat"]
    assert kmeans and kmeans[0]["ntotal"] == 0  # the coarse k-means ran on the (stand-in) GPU
    ivf_clones = [c for c in gpu.clones if c["kind"] == "IndexIVFPQ"]
    assert ivf_clones == [{"device": 0, "fp16": False, "ntotal": 0, "kind": "IndexIVFPQ", "trained": True}]
    assert built.on_gpu and built.ntotal == 20_000  # cloned trained and empty, then filled on the GPU
    assert gpu.nprobe_of(built.gpu_leaves[0]) == 16 and ("nprobe", 16) in gpu.params
    assert "GPU k-means" in caplog.text


def test_ivf_search_with_the_gpu_stand_in_finds_near_duplicates(tmp_path, monkeypatch):
    FakeGpu(monkeypatch)
    shards, corpus = shards_of(tmp_path, 4000, dim=32)
    rng = np.random.default_rng(5)
    targets = rng.choice(4000, 30, replace=False)
    queries = corpus[targets] + 0.01 * rng.standard_normal((30, 32)).astype(np.float32)
    _, rows = search_shards(shards, queries, 10, IndexSpec("ivfpq", nlist=32, nprobe=8, use_gpu=True),
                            policy=SavedIndexPolicy(save=False))
    assert np.mean([t in r for t, r in zip(targets, rows)]) >= 0.9


def test_cpu_training_logs_an_estimate(tmp_path, caplog):
    shards, _ = shards_of(tmp_path, 3000)
    with caplog.at_level(logging.INFO):
        build_full_index(shards, IndexSpec("ivfpq", nlist=16, pq_m=4), SavedIndexPolicy(save=False))
    assert "CPU k-means" in caplog.text and "GFLOP/s measured here" in caplog.text


@pytest.mark.parametrize("ngpu,shard,fp16", [(1, False, False), (1, False, True), (3, True, True), (3, False, False)])
def test_gpu_flat_is_built_in_pieces_spread_over_gpus_and_exact(tmp_path, monkeypatch, ngpu, shard, fp16):
    gpu = FakeGpu(monkeypatch, ngpu=ngpu)
    monkeypatch.setattr(faiss_index, "FLAT_PIECE_ROWS", 100)
    shards, corpus = shards_of(tmp_path, 1050, parts=3)
    queries = np.random.default_rng(1).standard_normal((7, 16)).astype(np.float32)
    _, rows = search_shards(shards, queries, 20, IndexSpec("flat", use_gpu=True, gpu_fp16=fp16, gpu_shard=shard))
    np.testing.assert_array_equal(rows, brute_force(corpus, queries, 20))
    assert [c["ntotal"] for c in gpu.clones] == [100] * 10 + [50]  # each piece cloned once at its final size
    assert {c["fp16"] for c in gpu.clones} == {fp16}
    devices = [c["device"] for c in gpu.clones]
    assert devices == sorted(devices) and set(devices) == (set(range(ngpu)) if shard else {0})


def test_gpu_out_of_memory_is_one_message_with_size_and_flags(tmp_path, monkeypatch):
    FakeGpu(monkeypatch, ngpu=2, fail_with="Error in allocMemory: StandardGpuResources: alloc fail type "
                                           "TemporaryMemoryOverflow dev 0 (cudaMalloc error out of memory [2])")
    shards, _ = shards_of(tmp_path, 500)
    with pytest.raises(IndexBuildError) as e:
        search_shards(shards, np.zeros((1, 16), np.float32), 5, IndexSpec("flat", use_gpu=True))
    msg = str(e.value)
    assert "faiss ran out of GPU memory building Flat over 500 x 16 vectors" in msg
    for flag in ("--faiss_fp16", "--faiss_shard", "--search_shard_size", "--faiss_cpu"):
        assert flag in msg


def test_hnsw_stays_on_cpu_with_a_gpu(tmp_path, monkeypatch):
    gpu = FakeGpu(monkeypatch)
    shards, _ = shards_of(tmp_path, 300)
    built = build_full_index(shards, IndexSpec("hnsw", ef_search=77, use_gpu=True), SavedIndexPolicy(save=False))
    assert not built.on_gpu and gpu.clones == []
    assert faiss.downcast_index(built.index).hnsw.efSearch == 77


def test_sharded_gpu_ivf_is_saved_as_one_cpu_index_and_reused(tmp_path, monkeypatch, caplog):
    gpu = FakeGpu(monkeypatch, ngpu=2)
    shards, corpus = shards_of(tmp_path, 3000)
    for s in shards:  # records, as generate_dense_embeddings writes them
        from dpr.index.records import write_record
        write_record(s.path, {"format": 1, "kind": "passage_vectors", "model": {}, "rows": len(s.ids)})
    spec = IndexSpec("ivfpq", nlist=16, pq_m=4, nprobe=16, use_gpu=True, gpu_shard=True)
    queries = corpus[:5]
    first = search_shards(shards, queries, 10, spec)
    assert len([c for c in gpu.clones if c["kind"] == "IndexIVFPQ"]) == 2 and gpu.to_cpu == 2
    saved = faiss.read_index(str(tmp_path / "emb.index.IVF16_PQ4np.faiss"))
    assert saved.ntotal == 3000
    faiss.extract_index_ivf(saved).nprobe = 16
    np.testing.assert_array_equal(saved.search(queries, 10)[1], first[1])  # global row numbers kept on merge

