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



# ----- issue 20: the GPU paths against stand-ins written from faiss's C++ (tests/index/fake_gpu.py) -----

def recorded_shards(tmp_path, n, dim=16, seed=0):
    from dpr.index.records import write_record
    shards, corpus = shards_of(tmp_path, n, dim=dim, seed=seed)
    for s in shards:  # records, as generate_dense_embeddings writes them: the trained index is saved and reused
        write_record(s.path, {"format": 1, "kind": "passage_vectors", "model": {}, "rows": len(s.ids)})
    return shards, corpus


@pytest.mark.parametrize("factory,on_gpu", [
    ("IVF16,PQ4np", True),          # IndexShards of GPU IVFs (GpuCloner.cpp:458, 325-438)
    ("PCA8,IVF16,PQ4np", True),     # a CPU IndexPreTransform around GPU shards (clone_index.cpp:316-331)
    ("HNSW16,Flat", False),         # a CPU copy (clone_index.cpp:338-343)
    ("IVF16,PQ4np,RFlat", False),   # GPU shards under a refine stage that cannot search them (IndexRefine.cpp:326)
])
def test_saved_index_reused_over_several_gpus_handles_each_kind(tmp_path, monkeypatch, factory, on_gpu):
    shards, corpus = recorded_shards(tmp_path, 3000)
    queries = corpus[:20] + 0.01
    cpu_spec = IndexSpec(factory=factory, nprobe=16, ef_search=64)
    expected = search_shards(shards, queries, 10, cpu_spec)  # built on CPU and saved beside the embeddings
    gpu = FakeGpu(monkeypatch, ngpu=2)
    spec = IndexSpec(factory=factory, nprobe=16, ef_search=64, use_gpu=True, gpu_shard=True)
    built = build_full_index(shards, spec)  # reuses the saved index: the --faiss_shard branch of to_gpu
    assert built.on_gpu == on_gpu and len(gpu.all_gpus) == (1 if on_gpu else 0)
    if on_gpu:
        assert gpu.nprobe_of(built.index) == 16  # reached through the shards / the IndexPreTransform
        assert len(gpu.clones) == 2
    np.testing.assert_array_equal(search.search_index(built.index, queries, 10)[1], expected[1])


def test_sharded_reuse_uses_fp16_lookup_tables_when_ivfpq_needs_them(tmp_path, monkeypatch):
    # PQ64 x 8 bits: 4 B x 64 x 256 = 64 KiB of float32 lookup tables > 48 KiB of shared memory; float16: 32 KiB.
    # Without useFloat16 the shard clone throws inside `#pragma omp parallel for` (GpuCloner.cpp:360-381): an abort
    shards, _ = recorded_shards(tmp_path, 4096, dim=128)
    build_full_index(shards, IndexSpec("ivfpq", nlist=16, pq_m=64))  # saved on CPU
    gpu = FakeGpu(monkeypatch, ngpu=2)
    built = build_full_index(shards, IndexSpec("ivfpq", nlist=16, pq_m=64, nprobe=4, use_gpu=True, gpu_shard=True))
    assert gpu.all_gpus == [{"kind": "IndexIVFPQ", "shard": True, "fp16": True}]
    assert [c["fp16"] for c in gpu.clones] == [True, True] and built.ntotal == 4096
    # PQ16 fits in float32 tables: not forced to float16
    shards16, _ = recorded_shards(tmp_path / "m16", 4096, dim=128)
    build_full_index(shards16, IndexSpec("ivfpq", nlist=16, pq_m=16, use_gpu=False))
    build_full_index(shards16, IndexSpec("ivfpq", nlist=16, pq_m=16, use_gpu=True, gpu_shard=True))
    assert gpu.all_gpus[-1]["fp16"] is False


def test_the_fake_aborts_like_faiss_without_fp16_tables(tmp_path, monkeypatch):
    from tests.index.fake_gpu import ProcessAborted
    gpu = FakeGpu(monkeypatch, ngpu=2)
    index = faiss.index_factory(128, "IVF4,PQ64np", faiss.METRIC_INNER_PRODUCT)
    x = np.random.default_rng(0).standard_normal((2000, 128)).astype(np.float32)
    index.train(x)
    index.add(x)
    with pytest.raises(ProcessAborted):
        faiss.index_cpu_to_all_gpus(index, _shard_options())
    with pytest.raises(RuntimeError, match="useFloat16LookupTables"):
        gpu.index_cpu_to_gpu(None, 0, index)  # one GPU: a plain exception (GpuIndexIVFPQ.cu:607-620)


def _shard_options():
    co = faiss.GpuMultipleClonerOptions()
    co.shard = True
    return co


def test_nprobe_reaches_a_gpu_ivf_inside_a_pretransform(tmp_path, monkeypatch):
    gpu = FakeGpu(monkeypatch)
    shards, corpus = shards_of(tmp_path, 3000)
    spec = IndexSpec(factory="PCA8,IVF16,PQ4np", nprobe=8, use_gpu=True)
    built = build_full_index(shards, spec, SavedIndexPolicy(save=False))
    assert built.on_gpu and isinstance(faiss.downcast_index(built.index), faiss.IndexPreTransform)
    assert gpu.nprobe_of(built.index) == 8  # the clone arrived with the CPU index's 1 (GpuIndexIVF.cu:158-159)
    # and inside an IndexIDMap (AutoTune.cpp:503-506)
    ivf = faiss.index_factory(16, "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(corpus)
    idmap = faiss.IndexIDMap(gpu.index_cpu_to_gpu(None, 0, ivf))
    faiss_index.set_search_params(faiss_index.BuiltIndex(idmap, "", on_gpu=True, gpu_leaves=[idmap]),
                                  IndexSpec(nprobe=5))
    assert gpu.nprobe_of(idmap) == 5


def test_k_or_nprobe_over_the_gpu_limit_is_refused_before_building(tmp_path, monkeypatch):
    gpu = FakeGpu(monkeypatch)
    shards, corpus = shards_of(tmp_path, 3000)
    spec = IndexSpec("ivfpq", nlist=16, pq_m=4, use_gpu=True)
    built = build_full_index(shards, spec, SavedIndexPolicy(save=False))
    with pytest.raises(RuntimeError, match="up to 2048"):  # what faiss-gpu says at search time
        built.index.search(corpus[:2], 2049)
    gpu.clones.clear()
    for k, s in ((2049, spec), (10, IndexSpec("ivfpq", nlist=16, pq_m=4, nprobe=4096, use_gpu=True))):
        with pytest.raises(IndexBuildError, match="at most 2048"):
            search_shards(shards, corpus[:2], k, s, policy=SavedIndexPolicy(save=False))
    assert gpu.clones == []  # refused before any work
    # on CPU the same sizes search
    assert search_shards(shards, corpus[:2], 2049, IndexSpec("flat"))[1].shape == (2, 2049)


def test_dense_retriever_refuses_gpu_sizes_at_parse_time(monkeypatch, capsys):
    import dense_retriever as dr
    FakeGpu(monkeypatch)
    base = ["--qa_file", "q", "--encoded_ctx_file", "e", "--out_file", "o"]
    for flags, named in ((["--n_docs", "3000"], "--n_docs 3000"),
                         (["--hybrid_alpha", "--ctx_file", "c", "--hybrid_depth", "2100"],
                          "--n_docs / --hybrid_depth 2100"),
                         (["--index_type", "ivfpq", "--nprobe", "4096"], "--nprobe 4096")):
        with pytest.raises(SystemExit) as e:
            dr.parse_args(base + flags)
        err = capsys.readouterr().err
        assert e.value.code == 2 and named in err and "--faiss_cpu" in err and "2048" in err
        assert dr.parse_args(base + flags + ["--faiss_cpu"])  # on CPU they are fine
    assert dr.parse_args(base + ["--nprobe", "4096"])  # no IVF: nprobe unused
    assert dr.parse_args(["--qa_file", "q", "--n_docs", "3000", "--encode_q_and_save", "--q_encoding_path", "v.npy"])
    assert dr.parse_args(base + ["--n_docs", "2048"])


def test_gpu_kmeans_out_of_memory_gets_the_size_and_flags_message(tmp_path, monkeypatch):
    FakeGpu(monkeypatch, kmeans_oom=True)
    shards, _ = shards_of(tmp_path, 3000)
    with pytest.raises(IndexBuildError) as e:
        build_full_index(shards, IndexSpec("ivfpq", nlist=16, pq_m=4, use_gpu=True), SavedIndexPolicy(save=False))
    msg = str(e.value)
    assert msg.startswith("faiss ran out of GPU memory building IVF16,PQ4np over 3,000 x 16 vectors")
    assert "--search_shard_size" in msg and "--faiss_cpu" in msg


def test_refine_k_factor_keeps_its_fraction(tmp_path):
    # ParameterSpace's k_factor_rf stores int(val) (AutoTune.cpp:531): 1.5 became 1; the field is a float
    # (IndexRefine.h:36) and the search takes idx_t(k * k_factor) candidates (IndexRefine.cpp:292-293)
    shards, corpus = shards_of(tmp_path, 3000)
    spec = IndexSpec(factory="IVF16,PQ4np,RFlat", nprobe=16, refine_k_factor=1.5)
    built = build_full_index(shards, spec, SavedIndexPolicy(save=False))
    assert faiss.downcast_index(built.index).k_factor == 1.5
    params = faiss.IndexRefineSearchParameters(k_factor=1.5, base_index_params=faiss.SearchParametersIVF(nprobe=16))
    np.testing.assert_array_equal(built.index.search(corpus[:9], 10)[1],
                                  built.index.search(corpus[:9], 10, params=params)[1])
