import logging
from pathlib import Path

import pytest

from dpr.data.shards import shard_range
from dpr.index.records import (
    FORMAT,
    PartialIndexError,
    VectorsMismatchError,
    check_coverage,
    check_pairing,
    differences,
    record_path,
    source_fingerprint,
)


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


def test_source_fingerprint_sees_a_same_size_edit_anywhere(tmp_path):
    """A one-byte edit between the blocks a sampled hash would read (here 100 KiB into a 5 MiB file)."""
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    body = bytearray(b"x" * (5 << 20))
    a.write_bytes(bytes(body))
    body[100 << 10] = ord("y")
    b.write_bytes(bytes(body))
    assert source_fingerprint(a)["size"] == source_fingerprint(b)["size"]
    assert source_fingerprint(a) != source_fingerprint(b)


def test_differences_ignore_info():
    rec = {"format": 1, "model": {"passage_tower": "x"}, "info": {"model": "/a"}}
    assert differences(rec, {**rec, "info": {"model": "/elsewhere"}}) == []
    assert differences(rec, {**rec, "model": {"passage_tower": "y"}}) == ["model"]
    assert differences(None, rec) == ["record"]


MODEL = {"question_tower": "q", "passage_tower": "p", "tokenizer": "t"}
SETTINGS = {"pooling": "mean", "normalize": True, "passage_prefix": "passage: ", "lowercase": False}


def record(**over):
    return {"format": FORMAT, "kind": "passage_vectors", "model": MODEL, "settings": SETTINGS, "max_length": 8,
            "source": {"size": 1}, "info": {"model": "B", "source": "p.tsv"}, **over}


def test_pairing(caplog):
    rec = record()
    check_pairing([(Path("e_shard0.npy"), rec)], MODEL, "the question tower of A", allow=False)
    with pytest.raises(VectorsMismatchError, match="e_shard0.npy: passage vectors made by B .* do not pair with "
                                                   "the question tower of A"):
        check_pairing([(Path("e_shard0.npy"), rec)], {**MODEL, "question_tower": "other"}, "the question tower "
                      "of A", allow=False)
    with pytest.raises(VectorsMismatchError, match=r"e_shard1.npy: encoded otherwise than e_shard0.npy: length cap "
                                                   r"\(max_length\) 9 vs 8 \(this shard vs e_shard0.npy\)"):
        check_pairing([(Path("e_shard0.npy"), rec), (Path("e_shard1.npy"), {**rec, "max_length": 9})], MODEL, "x",
                      allow=False)
    # every differing field named with both values (settings, length cap, source)
    other = {**rec, "settings": {**SETTINGS, "pooling": "cls", "lowercase": True}, "source": {"size": 2}}
    with pytest.raises(VectorsMismatchError, match=r"e_shard1.npy: encoded otherwise than e_shard0.npy: lowercase "
                                                   r"True vs False; pooling 'cls' vs 'mean'; source file \(p.tsv, 2 "
                                                   r"bytes, .* vs p.tsv, 1 bytes, .*\)"):
        check_pairing([(Path("e_shard0.npy"), rec), (Path("e_shard1.npy"), other)], MODEL, "x", allow=False)
    with pytest.raises(VectorsMismatchError, match="has no record"):
        check_pairing([(Path("e_shard0.npy"), None)], MODEL, "x", allow=False)
    check_pairing([(Path("e_shard0.npy"), None)], MODEL, "x", allow=True)
    assert "searching anyway" in caplog.text


def test_encoding_settings_are_part_of_the_pairing():
    """Passages pooled by mean do not pair with a search that pools by cls; e5's 'query: ' / 'passage: ' do."""
    paths = [(Path("e_shard0.npy"), record())]
    check_pairing(paths, MODEL, "A", allow=False, expected=dict(SETTINGS))
    for key, value in (("pooling", "cls"), ("normalize", False), ("lowercase", True), ("passage_prefix", "")):
        with pytest.raises(VectorsMismatchError, match=f"e_shard0.npy: passage vectors encoded with {key} "
                                                       f"{SETTINGS[key]!r} do not pair with A, which uses {key} "
                                                       f"{value!r}"):
            check_pairing(paths, MODEL, "A", allow=False, expected={**SETTINGS, key: value})
    check_pairing(paths, MODEL, "A", allow=True, expected={**SETTINGS, "pooling": "cls"})
    # settings the search flags can set: named as those flags; one they cannot (normalize): re-encode only
    tunable = ("pooling", "lowercase", "passage_prefix")
    with pytest.raises(VectorsMismatchError, match=r"Search with `--pooling mean --passage_prefix 'passage: '` "
                                                   r"\(Retriever.load: pooling='mean', passage_prefix='passage: '\) "
                                                   r"to pair with them"):
        check_pairing(paths, MODEL, "A", allow=False, expected={**SETTINGS, "pooling": "cls", "passage_prefix": ""},
                      tunable=tunable)
    with pytest.raises(VectorsMismatchError, match=r"which uses normalize False. Re-encode the passages"):
        check_pairing(paths, MODEL, "A", allow=False, expected={**SETTINGS, "normalize": False}, tunable=tunable)


def test_a_record_of_an_older_version_is_named_as_such(caplog):
    old = {k: v for k, v in record(format=1).items()}
    with pytest.raises(VectorsMismatchError, match=r"e_shard0.npy: its record \(e_shard0.meta.json\) was made by "
                                                   r"an older version.*--allow_mismatched_vectors"):
        check_pairing([(Path("e_shard0.npy"), old)], MODEL, "A", allow=False)
    with caplog.at_level(logging.WARNING):
        check_pairing([(Path("e_shard0.npy"), old)], MODEL, "A", allow=True)
        check_coverage([(Path("e_shard0.npy"), old)], allow_partial=False)  # no crash on the missing total
    assert "older version" in caplog.text and "not checking that the shards cover" in caplog.text


def shards(total: int, n: int, ids, prefix="out/emb"):
    out = []
    for k in ids:
        start, stop = shard_range(total, k, n)
        rows = {"shard_id": k, "num_shards": n, "start": start, "stop": stop, "total": total}
        out.append((Path(f"{prefix}_shard{k}.npy"), record(rows=rows)))
    return out


def test_shards_must_tile_the_collection(caplog):
    check_coverage(shards(40, 3, [0, 1, 2]), allow_partial=False)
    with pytest.raises(PartialIndexError, match=r"out/emb_shard0.npy: the shards cover 27 of 40 passages: rows "
                                                r"\[14, 27\) of p.tsv \(shard 1 of 3\) are missing. Encode them with "
                                                r"`generate_dense_embeddings.py --model_file B --ctx_file p.tsv "
                                                r"--out_file out/emb --shard_id 1 --num_shards 3 "
                                                r"--p_sequence_length 8 --pooling mean --passage_prefix "
                                                r"'passage: '`"):
        check_coverage(shards(40, 3, [0, 2]), allow_partial=False)
    with pytest.raises(PartialIndexError, match=r"rows \[27, 40\) .* \(shard 2 of 3\) are missing"):
        check_coverage(shards(40, 3, [0, 1]), allow_partial=False)  # the last shard: seen through the total
    with pytest.raises(PartialIndexError, match=r"emb_shard1.npy: rows \[14, 27\) of p.tsv \(shard 1 of 3\) are "
                                                r"also in out/emb_shard1.npy"):
        check_coverage(shards(40, 3, [0, 1, 2]) + shards(40, 3, [1], prefix="copy/emb"), allow_partial=False)
    with pytest.raises(PartialIndexError, match="emb_shard1.npy: shard 1 of 2 over 40 rows, but emb_shard0.npy is "
                                                "of another split"):
        check_coverage(shards(40, 3, [0]) + shards(40, 2, [1]), allow_partial=False)
    other_source = [(p, {**r, "source": {"size": 2}}) for p, r in shards(40, 3, [1, 2])]
    with pytest.raises(PartialIndexError, match="emb_shard1.npy: encoded from another source file"):
        check_coverage(shards(40, 3, [0]) + other_source, allow_partial=False)
    with caplog.at_level(logging.WARNING):
        check_coverage(shards(40, 3, [0, 2]), allow_partial=True)
    assert "--allow_partial_index" in caplog.text


def test_a_shard_must_hold_the_rows_its_record_names(tmp_path):
    import numpy as np

    found = shards(40, 3, [0, 1, 2], prefix=str(tmp_path / "emb"))
    for path, rec in found:
        np.save(path, np.zeros((rec["rows"]["stop"] - rec["rows"]["start"], 4), np.float32))
    check_coverage(found, allow_partial=False)
    np.save(found[1][0], np.zeros((5, 4), np.float32))
    with pytest.raises(PartialIndexError, match=r"emb_shard1.npy: holds 5 vectors but its record says rows "
                                                r"\[14, 27\)"):
        check_coverage(found, allow_partial=False)
