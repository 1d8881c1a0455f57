"""Every writer of data plus a marker (dpr.utils.io.publish_then_mark): a rewrite killed half-way leaves no marker,
so the old marker never vouches for a mix of old and new files."""
import numpy as np
import pytest

from dpr.data import bm25
from dpr.data.bm25 import BM25Index, TokenizedCorpus
from dpr.index.records import read_record
from dpr.models.encoder import Encoder
from dpr.retrieval import query_cache
from dpr.training import checkpoint
from dpr.training.checkpoint import latest_checkpoint, save_checkpoint
from tests.tiny_encoder import tiny_bert, tiny_tokenizer

OLD, NEW = ["北京是中国的首都。", "长江是中国最长的河流！"], ["上海是中国最大的城市。", "黄河", "我爱北京天安门"]


def kill_at(monkeypatch, module, name, nth):
    """Make module.name raise on its nth call (1-based), as a kill or a full disk would stop the writer there."""
    real, calls = getattr(module, name), []

    def fake(*a, **k):
        calls.append(1)
        if len(calls) == nth:
            raise OSError("killed")
        return real(*a, **k)

    monkeypatch.setattr(module, name, fake)


def test_token_cache_rewrite_killed_is_not_trusted(tmp_path, monkeypatch):
    TokenizedCorpus.build(OLD).save(tmp_path, {"source": "s"})
    with monkeypatch.context() as m:
        kill_at(m, bm25.np, "save", 2)  # the new ids.npy is in place, offsets.npy not yet
        with pytest.raises(OSError):
            TokenizedCorpus.build(NEW).save(tmp_path, {"source": "s"})
    assert TokenizedCorpus.load(tmp_path, {"source": "s"}) is None  # was: old offsets over new ids, trusted


def test_bm25_index_rewrite_killed_is_not_trusted(tmp_path, monkeypatch):
    BM25Index(TokenizedCorpus.build(OLD)).save(tmp_path, {"source": "s"})
    with monkeypatch.context() as m:
        kill_at(m, bm25.np, "save", 2)
        with pytest.raises(OSError):
            BM25Index(TokenizedCorpus.build(NEW)).save(tmp_path, {"source": "s"})
    assert not (tmp_path / "meta.json").exists()


def test_checkpoint_rewrite_killed_is_not_a_checkpoint(tmp_path, monkeypatch):
    enc = Encoder(tiny_bert(0))
    path = tmp_path / "dpr_biencoder.0.1"
    save_checkpoint(path, enc, enc, tiny_tokenizer(), {"epoch": 0, "iteration": 1})
    with monkeypatch.context() as m:
        kill_at(m, checkpoint, "_save_dir_atomic", 2)  # the new question tower is in place, the passage one not
        with pytest.raises(OSError):
            save_checkpoint(path, enc, enc, tiny_tokenizer(), {"epoch": 0, "iteration": 1})
    assert latest_checkpoint(tmp_path) is None  # was: the old state file vouched for the new question tower


def test_question_vectors_rewrite_killed_has_no_record(tmp_path, monkeypatch):
    path = tmp_path / "q.npy"
    query_cache.save_question_vectors(path, ["a"], np.ones((1, 4), np.float32), {"kind": "question_vectors"})
    assert read_record(path)["count"] == 1
    with monkeypatch.context() as m:
        kill_at(m, query_cache.np, "save", 1)
        with pytest.raises(OSError):
            query_cache.save_question_vectors(path, ["a", "b"], np.ones((2, 4), np.float32), {})
    assert read_record(path) is None
