from pathlib import Path

import pytest

from dpr.index.records import (VectorsMismatchError, check_pairing, differences, record_path, source_fingerprint)


def test_record_paths():
    assert record_path("out/emb_shard3.npy") == Path("out/emb_shard3.meta.json")
    assert record_path("q.npy") == Path("q.npy.meta.json")


def test_source_fingerprint_sees_edits_but_not_the_path(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    body = "".join(f"p{i}\t文本{i}\t\n" for i in range(50_000))
    a.write_text(body, encoding="utf-8")
    b.write_text(body, encoding="utf-8")
    assert source_fingerprint(a) == source_fingerprint(b)
    b.write_text(body.replace("p0\t文本0", "p0\t文本9"), encoding="utf-8")  # same size, first row edited
    assert source_fingerprint(a) != source_fingerprint(b)


def test_differences_ignore_info():
    rec = {"format": 1, "model": {"passage_tower": "x"}, "info": {"model": "/a"}}
    assert differences(rec, {**rec, "info": {"model": "/elsewhere"}}) == []
    assert differences(rec, {**rec, "model": {"passage_tower": "y"}}) == ["model"]
    assert differences(None, rec) == ["record"]


def test_pairing(caplog):
    model = {"question_tower": "q", "passage_tower": "p", "tokenizer": "t"}
    rec = {"kind": "passage_vectors", "model": model, "settings": {}, "max_length": 8, "source": {},
           "info": {"model": "B"}}
    check_pairing([(Path("e_shard0.npy"), rec)], model, "the question tower of A", allow=False)
    with pytest.raises(VectorsMismatchError, match="e_shard0.npy: passage vectors made by B .* do not pair with "
                                                   "the question tower of A"):
        check_pairing([(Path("e_shard0.npy"), rec)], {**model, "question_tower": "other"}, "the question tower "
                      "of A", allow=False)
    with pytest.raises(VectorsMismatchError, match="e_shard1.npy: made with other encoder settings"):
        check_pairing([(Path("e_shard0.npy"), rec), (Path("e_shard1.npy"), {**rec, "max_length": 9})], model, "x",
                      allow=False)
    with pytest.raises(VectorsMismatchError, match="has no record"):
        check_pairing([(Path("e_shard0.npy"), None)], model, "x", allow=False)
    check_pairing([(Path("e_shard0.npy"), None)], model, "x", allow=True)
    assert "searching anyway" in caplog.text
