import os

import bm25s
import numpy as np

from dpr.data.bm25 import BM25Index, TokenizedCorpus, cached_tokenize, index_passages, score_matrix, tokenize
from dpr.utils.io import atomic_write

TEXTS = ["北京是中国的首都。", "上海是中国最大的城市，位于长江入海口。", "长江是中国最长的河流！",
         "我爱北京天安门", "The quick brown fox, 北京?", "黄河是中国第二长的河流"]


def dense(scores, vocab):
    """docs x tokens matrix of a bm25s `scores` dict, columns in sorted-token order."""
    tokens = sorted(t for t in vocab if t)
    m = np.zeros((scores["num_docs"], len(tokens)))
    for j, t in enumerate(tokens):
        i = vocab[t]
        a, b = scores["indptr"][i], scores["indptr"][i + 1]
        m[scores["indices"][a:b], j] = scores["data"][a:b]
    return m


def test_tokenize_drops_punctuation_and_lowercases():
    toks = tokenize("The quick, 北京!")
    assert "the" in toks and "北京" in toks
    assert not any(t.strip(" ,!") == "" for t in toks)


def test_score_matrix_equals_bm25s_own_index():
    corpus = TokenizedCorpus.build(TEXTS)
    for k1, b in [(1.5, 0.75), (0.9, 0.4)]:
        ref = bm25s.BM25(k1=k1, b=b, method="lucene")
        ref.index([tokenize(t) for t in TEXTS], show_progress=False)
        for chunk_docs in (1, 4, 100):  # one document per chunk, uneven chunks, a single chunk
            ours = score_matrix(corpus, k1, b, chunk_docs=chunk_docs)
            assert np.all(np.diff(ours["indices"][ours["indptr"][0]:ours["indptr"][1]]) > 0)  # docs sorted in a column
            np.testing.assert_allclose(dense(ours, corpus.vocab), dense(ref.scores, ref.vocab_dict), rtol=1e-6)


def test_search_ranks_and_handles_unknown_words():
    index = BM25Index(TokenizedCorpus.build(TEXTS))
    hits = index.search(["长江是什么河流", "xyz qqq", "北京"], k=3, num_threads=2)
    assert hits[0][0][0] == 2 and len(hits[0]) == 3
    assert hits[1] == []
    assert {d for d, _ in hits[2]} == {0, 3, 4}
    assert all(s > 0 for h in hits for _, s in h)
    assert len(index.search(["中国"], k=100)[0]) == 4  # k above the corpus size is capped


def test_token_cache_is_reused_and_refreshed(tmp_path):
    p = tmp_path / "passages.tsv"
    with atomic_write(p) as f:
        f.write("id\ttext\ttitle\n" + "".join(f"p{i}\t{t}\t\n" for i, t in enumerate(TEXTS)))
    index, pids = index_passages(p)
    assert pids == [f"p{i}" for i in range(len(TEXTS))]
    cache = tmp_path / "passages.jieba"
    assert (cache / "meta.json").is_file()
    # a reused cache must not tokenize again: feed texts that would fail if consumed
    again = cached_tokenize(iter(()), p, cache)
    np.testing.assert_array_equal(again.ids, TokenizedCorpus.build(TEXTS).ids)
    with atomic_write(p) as f:  # new content: the fingerprint changes and the cache is rebuilt
        f.write("id\ttext\ttitle\nz\t全新的内容\t\n")
    os.utime(p, ns=(1, 1))
    index, pids = index_passages(p)
    assert pids == ["z"] and index.num_docs == 1


def test_index_is_built_once_and_never_reused_stale(tmp_path, monkeypatch):
    import dpr.data.bm25 as bm25_module

    p = tmp_path / "passages.tsv"
    with atomic_write(p) as f:
        f.write("id\ttext\ttitle\n" + "".join(f"p{i}\t{t}\t\n" for i, t in enumerate(TEXTS)))
    built, _ = index_passages(p)
    meta = (tmp_path / "passages.jieba" / "index" / "meta.json")
    assert meta.is_file()
    calls = []
    real = bm25_module.score_matrix
    monkeypatch.setattr(bm25_module, "score_matrix", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    reused, _ = index_passages(p)
    assert calls == []  # loaded, not rebuilt
    assert reused.search(["长江是什么河流", "北京"], k=3) == built.search(["长江是什么河流", "北京"], k=3)
    index_passages(p, k1=1.2, b=0.75)  # other parameters: rebuilt, and the cache now records them
    assert calls == [(1.2, 0.75)]
    index_passages(p, k1=1.2, b=0.75)
    assert len(calls) == 1
    with atomic_write(p) as f:  # the collection changes: rebuilt from fresh tokens
        f.write("id\ttext\ttitle\nz\t长江\t\n")
    os.utime(p, ns=(1, 1))
    index, pids = index_passages(p, k1=1.2, b=0.75)
    assert len(calls) == 2 and pids == ["z"] and [d for d, _ in index.search(["长江"], k=3)[0]] == [0]
    meta.unlink()  # a cache without its record (e.g. killed while writing) is never trusted
    index_passages(p, k1=1.2, b=0.75)
    assert len(calls) == 3 and meta.is_file()
    index_passages(p, cache_dir=None, k1=1.2, b=0.75)  # no cache: always built
    assert len(calls) == 4


def _reference_corpus(texts):
    """The token-by-token numbering (first occurrence first) that any number of workers must reproduce."""
    vocab, ids, offsets = {}, [], [0]
    for text in texts:
        ids += [vocab.setdefault(t, len(vocab)) for t in tokenize(text)]
        offsets.append(len(ids))
    return vocab, np.array(ids, dtype=np.int32), np.array(offsets, dtype=np.int64)


def _many_texts(n):
    rng = np.random.default_rng(0)
    words = [w for t in TEXTS for w in tokenize(t)] + [f"w{i}" for i in range(50)]  # later chunks bring new tokens
    return ["".join(rng.choice(words[: 10 + i % len(words)], size=3 + i % 9)) for i in range(n)]


def _files(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_one_and_many_workers_build_byte_identical_caches_and_indexes(tmp_path, monkeypatch):
    import dpr.data.bm25 as bm25
    monkeypatch.setattr(bm25, "TOKENIZE_CHUNK", 7)  # many chunks, each with tokens new to the collection
    monkeypatch.setattr(bm25, "SCORE_CHUNK_DOCS", 30)
    texts = _many_texts(300)
    vocab, ids, offsets = _reference_corpus(texts)
    fp = {"source": "x"}
    for workers in (1, 3):
        corpus = TokenizedCorpus.build(texts, num_workers=workers)
        assert list(corpus.vocab.items()) == list(vocab.items())
        assert corpus.ids.dtype == np.int32 and corpus.offsets.dtype == np.int64
        np.testing.assert_array_equal(corpus.ids, ids)
        np.testing.assert_array_equal(corpus.offsets, offsets)
        corpus.save(tmp_path / f"tok{workers}", fp)
        BM25Index(corpus, num_threads=workers).save(tmp_path / f"idx{workers}", fp)
    assert _files(tmp_path / "tok1") == _files(tmp_path / "tok3")
    assert _files(tmp_path / "idx1") == _files(tmp_path / "idx3")


def test_search_in_several_processes_equals_one(monkeypatch):
    import dpr.data.bm25 as bm25
    monkeypatch.setattr(bm25, "_MIN_QUERIES_A_WORKER", 1)
    texts = _many_texts(200)
    index = BM25Index(TokenizedCorpus.build(texts))
    queries = [t[:4] for t in texts[:50]] + ["xyz"]
    assert index.search(queries, 20, num_threads=3) == index.search(queries, 20, num_threads=1)


def test_search_scores_equal_bm25s_and_ties_go_by_doc_index():
    texts = _many_texts(200) + ["天坛", "天坛"]  # two docs with one score: the lower index first
    index = BM25Index(TokenizedCorpus.build(texts))
    queries = [t[:4] for t in texts[:40]] + ["天坛"]
    ours = index.search(queries, 15)
    for q, hits in zip(queries, ours):
        docs, scores = index.model.retrieve([index.query_ids(q)], k=index.num_docs, show_progress=False)
        every = {int(d): float(s) for d, s in zip(docs[0], scores[0]) if s > 0}
        assert [s for _, s in hits] == sorted(every.values(), reverse=True)[:15]
        assert all(every[d] == s for d, s in hits)
        assert all((s1 > s2) or (s1 == s2 and d1 < d2) for (d1, s1), (d2, s2) in zip(hits, hits[1:]))
    assert [d for d, _ in ours[-1][:2]] == [200, 201]


def test_the_worker_pool_reads_its_input_only_a_few_chunks_ahead():
    import multiprocessing

    from dpr.data.bm25 import _pool_map
    pulled, ahead_seen = [0], []

    def items():
        for i in range(40):
            pulled[0] += 1
            yield i

    with multiprocessing.get_context("fork").Pool(2) as pool:
        out = []
        for r in _pool_map(pool, abs, items(), 4):
            ahead_seen.append(pulled[0] - len(out))
            out.append(r)
    assert out == list(range(40)) and max(ahead_seen) <= 4
