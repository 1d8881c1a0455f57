"""Passage texts by id: streamed once for a batch, or row by row from byte offsets found once (PassageStore)."""
import pytest

from dpr.retrieval.passages import PassageStore, lookup_passages
from dpr.utils.io import InputError
from tests.tiny_encoder import write_passages_tsv

ROWS = [("a1", "北京是首都"), ("b2", "上海\u3000在东边"), ("c3", "text three")]


def test_store_returns_each_row_as_lookup_does(tmp_path):
    path = write_passages_tsv(tmp_path / "p.tsv", ROWS)
    store = PassageStore(path)
    assert len(store) == 3 and "b2" in store and "zz" not in store
    assert store.get(["c3", "a1"]) == lookup_passages(path, ["c3", "a1"])
    assert store.get(["b2"])["b2"][0] == ROWS[1][1]


def test_store_refuses_unknown_ids_and_a_changed_file(tmp_path):
    path = write_passages_tsv(tmp_path / "p.tsv", ROWS)
    store = PassageStore(path)
    with pytest.raises(InputError, match="'zz' is not in this file"):
        store.get(["zz"])
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("a1\t", "c3\t", 1).replace("c3\ttext", "a1\ttext"), encoding="utf-8")  # same size
    with pytest.raises(InputError, match=r"p.tsv:2: row of 'a1' holds 'c3'"):
        store.get(["a1"])
    path.write_text(text + "d4\tmore\t\n", encoding="utf-8")
    with pytest.raises(InputError, match="changed since its rows were indexed"):
        store.get(["a1"])


def test_store_refuses_a_repeated_id(tmp_path):
    path = write_passages_tsv(tmp_path / "p.tsv", ROWS + [("a1", "again")])
    with pytest.raises(InputError, match=r"p.tsv:5: passage id 'a1' appears twice"):
        PassageStore(path)
