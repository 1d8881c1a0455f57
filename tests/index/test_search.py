import numpy as np
import pytest

from dpr.index.embeddings import open_shards, save_shard
from dpr.index.faiss_index import IndexBuildError, IndexSpec, build_index, default_pq_m, factory_string
from dpr.index.search import merge_topk, search_shards


def make_shards(tmp_path, sizes, dim=16, seed=0, fp16=False):
    rng = np.random.default_rng(seed)
    all_vecs, start = [], 0
    for k, n in enumerate(sizes):
        vecs = rng.standard_normal((n, dim)).astype(np.float32)
        save_shard(tmp_path / f"emb_shard{k}", [f"d{start + i}" for i in range(n)], vecs, fp16=fp16)
        all_vecs.append(vecs)
        start += n
    return open_shards(str(tmp_path / "emb_shard*.npy")), np.concatenate(all_vecs)


def brute_force(corpus, queries, k):
    scores = queries @ corpus.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("window", [7, 50, 1000])
def test_sharded_flat_search_equals_one_flat_index(tmp_path, window):
    shards, corpus = make_shards(tmp_path, [40, 3, 57, 20])
    queries = np.random.default_rng(1).standard_normal((9, 16)).astype(np.float32)
    one_scores, one_rows = search_shards(shards, queries, 10, IndexSpec("flat"))
    win_scores, win_rows = search_shards(shards, queries, 10, IndexSpec("flat"), search_shard_size=window)
    np.testing.assert_array_equal(win_rows, one_rows)
    np.testing.assert_allclose(win_scores, one_scores, rtol=1e-5)
    ref_scores, ref_rows = brute_force(corpus, queries, 10)
    np.testing.assert_array_equal(one_rows, ref_rows)
    np.testing.assert_allclose(one_scores, ref_scores, rtol=1e-4, atol=1e-5)


def test_k_larger_than_collection_leaves_missing_marked(tmp_path):
    shards, corpus = make_shards(tmp_path, [3, 2])
    queries = np.ones((2, 16), dtype=np.float32)
    for window in (None, 2):
        scores, rows = search_shards(shards, queries, 8, IndexSpec("flat"), search_shard_size=window)
        assert (rows[:, :5] >= 0).all() and (rows[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
        assert sorted(rows[0, :5].tolist()) == [0, 1, 2, 3, 4]


def test_fp16_shards_search_close_to_fp32(tmp_path):
    shards, corpus = make_shards(tmp_path, [30, 30], fp16=True)
    queries = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    _, rows = search_shards(shards, queries, 5, IndexSpec("flat"))
    _, ref = brute_force(corpus.astype(np.float16).astype(np.float32), queries, 5)
    np.testing.assert_array_equal(rows, ref)


def test_merge_topk_keeps_best_and_prefers_earlier_on_ties():
    a_s, a_r = np.array([[5.0, 1.0]]), np.array([[0, 1]])
    b_s, b_r = np.array([[5.0, 3.0]]), np.array([[7, 8]])
    s, r = merge_topk(a_s, a_r, b_s, b_r, 3)
    assert r.tolist() == [[0, 7, 8]] and s.tolist() == [[5.0, 5.0, 3.0]]


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_indexes_find_near_duplicates(tmp_path, kind):
    dim = 32
    rng = np.random.default_rng(3)
    corpus = rng.standard_normal((2000, dim)).astype(np.float32)
    save_shard(tmp_path / "e_shard0", [f"d{i}" for i in range(2000)], corpus)
    shards = open_shards(str(tmp_path / "e_shard0.npy"))
    targets = rng.choice(2000, 20, replace=False)
    queries = corpus[targets] + 0.01 * rng.standard_normal((20, dim)).astype(np.float32)
    _, rows = search_shards(shards, queries, 10, IndexSpec(kind, nprobe=8))
    hits = np.mean([t in r for t, r in zip(targets, rows)])
    assert hits >= 0.9


def test_factory_strings():
    assert factory_string(IndexSpec("flat"), 384, 10**6) == "Flat"
    assert factory_string(IndexSpec("hnsw", hnsw_m=16), 384, 10**6) == "HNSW16,Flat"
    assert factory_string(IndexSpec("ivfpq"), 384, 10**6) == "IVF4000,PQ48np"
    assert factory_string(IndexSpec("ivfpq", nlist=100), 384, 500) == "IVF100,PQ48np"
    assert factory_string(IndexSpec("flat", factory="IVF8,Flat"), 16, 100) == "IVF8,Flat"
    assert factory_string(IndexSpec("ivfpq", nlist=2), 384, 30) == "IVF2,PQ48x4np"  # tiny: smaller codebooks
    assert default_pq_m(100) == 25


def test_bad_factory_and_dimension_errors(tmp_path):
    with pytest.raises(IndexBuildError, match="NotAnIndex"):
        build_index(IndexSpec(factory="NotAnIndex"), 16, 100)
    with pytest.raises(IndexBuildError, match="must divide"):
        factory_string(IndexSpec("ivfpq", pq_m=5), 16, 1000)
    shards, _ = make_shards(tmp_path, [5])
    with pytest.raises(ValueError, match="dimension 16"):
        search_shards(shards, np.zeros((1, 8), np.float32), 3, IndexSpec())


def test_training_failure_is_a_clear_error(tmp_path):
    shards, _ = make_shards(tmp_path, [20])
    with pytest.raises(IndexBuildError, match="could not train the index on 20 vectors"):
        search_shards(shards, np.zeros((1, 16), np.float32), 3, IndexSpec(factory="IVF64,Flat"))


def test_refine_k_factor_reranks_more_candidates_exactly(tmp_path):
    shards, corpus = make_shards(tmp_path, [200], dim=16)
    queries = np.random.default_rng(4).standard_normal((10, 16)).astype(np.float32)
    _, exact = brute_force(corpus, queries, 10)
    spec = dict(factory="IVF4,PQ4x4np,RFlat", nprobe=4)
    _, one = search_shards(shards, queries, 10, IndexSpec(**spec))
    _, many = search_shards(shards, queries, 10, IndexSpec(**spec, refine_k_factor=20))
    np.testing.assert_array_equal(many, exact)  # 10 x 20 = every vector re-scored exactly
    assert not np.array_equal(one, exact)  # faiss's default factor 1 only reorders PQ's top 10


@pytest.mark.parametrize("factory", [None, "IVF4,Flat"])
def test_windowed_search_holds_one_window_at_a_time(tmp_path, monkeypatch, factory):
    """When a window is read, no reference to the previous one survives (progress bar included)."""
    import weakref

    import dpr.index.search as search
    shards, _ = make_shards(tmp_path, [300, 300, 300], fp16=True)  # fp16: each window is a new float32 array
    real, held = search.iter_windows, []

    def watched(shards_, size):
        for start, vectors in real(shards_, size):
            held.append(sum(ref() is not None for ref in previous))
            previous[:] = [weakref.ref(vectors)]
            yield start, vectors
            del vectors

    previous: list = []
    monkeypatch.setattr(search, "iter_windows", watched)
    queries = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    search_shards(shards, queries, 5, IndexSpec(factory=factory), search_shard_size=250)
    assert len(held) == 4 and held == [0, 0, 0, 0]


def test_training_sample_is_read_shard_by_shard_into_one_array(tmp_path, monkeypatch):
    import dpr.index.search as search
    monkeypatch.setattr(search, "SAMPLE_READ_ROWS", 7)  # several reads per shard
    shards, corpus = make_shards(tmp_path, [40, 3, 57, 20])
    bounds = np.cumsum([0] + [len(s.ids) for s in shards])
    sample = search._sample_rows(shards, bounds, 50, seed=4)
    rows = np.sort(np.random.default_rng(4).choice(120, size=50, replace=False))
    assert sample.dtype == np.float32 and sample.flags.c_contiguous
    np.testing.assert_array_equal(sample, corpus[rows])


def test_windowed_flat_cpu_search_copies_no_window_into_an_index(tmp_path, monkeypatch):
    import dpr.index.search as search
    shards, corpus = make_shards(tmp_path, [40, 60])
    queries = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)

    def no_index(*a, **kw):
        raise AssertionError("a flat CPU window was copied into a faiss index")

    monkeypatch.setattr(search, "_fill", no_index)
    scores, rows = search_shards(shards, queries, 10, IndexSpec("flat"), search_shard_size=30)
    np.testing.assert_array_equal(rows, brute_force(corpus, queries, 10)[1])
