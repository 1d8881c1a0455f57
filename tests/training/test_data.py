"""Training data: streaming JSON reader, compact store, deterministic sampling with top-up, per-chunk padding."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dpr.training.data import BiEncoderData, chunked, epoch_batches, iter_json_array, split_for_rank
from dpr.utils.io import InputError


def _ctx(pid, text, title=""):
    return {"passage_id": pid, "text": text, "title": title}


def test_streaming_reader_matches_json_load(tiny_train_file):
    items = [obj for _, _, obj in iter_json_array(tiny_train_file, read_size=17)]
    assert items == json.loads(tiny_train_file.read_text(encoding="utf-8"))


@pytest.mark.parametrize("text,line", [('[{"question": "a"},\n{"question": }]', 2), ('[{"a": 1}\n\n{"b": 2}]', 3),
                                       ('{"question": "a"}', 1)])
def test_malformed_file_names_file_and_line(tmp_path, text, line):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        list(iter_json_array(path, read_size=4))
    assert e.value.line == line and "bad.json" in str(e.value)


def _write(tmp_path, items):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(items, ensure_ascii=False))
    return path


def test_store_dedupes_and_skips_questions_without_positive(tmp_path):
    shared = _ctx("p1", "共享段落")
    data = BiEncoderData(_write(tmp_path, [
        {"question": "q1", "positive_ctxs": [shared], "hard_negative_ctxs": [_ctx("p2", "二", "标题")]},
        {"question": "q2", "positive_ctxs": [], "hard_negative_ctxs": [shared]},
        {"question": "q3", "positive_ctxs": [_ctx("p3", "三")], "hard_negative_ctxs": [shared]},
    ]))
    assert len(data) == 2 and data.skipped_no_positive == 1 and len(data.passages) == 3
    q, ps = data.sample(0, 1, 0, None)
    assert (q, ps) == ("q1", ["共享段落", "标题 二"])


def test_bad_item_names_file_and_line(tmp_path):
    path = _write(tmp_path, [{"question": "q", "positive_ctxs": [{"title": "no text"}]}])
    with pytest.raises(InputError, match="positive_ctxs"):
        BiEncoderData(path)


def test_top_up_from_the_other_pool_then_fillers(tmp_path):
    data = BiEncoderData(_write(tmp_path, [
        {"question": "q1", "positive_ctxs": [_ctx("a", "A")], "hard_negative_ctxs": [_ctx("h", "H")],
         "negative_ctxs": [_ctx("o1", "O1"), _ctx("o2", "O2")]},
        {"question": "q2", "positive_ctxs": [_ctx("b", "B")]},
    ]))
    _, ps = data.sample(0, 3, 0, None)
    assert ps == ["A", "H", "O1", "O2"]  # hard pool short: topped up from negative_ctxs
    _, ps = data.sample(1, 1, 1, None)
    assert ps[0] == "B" and len(ps) == 3 and set(ps[1:]) <= {"A", "H", "O1", "O2"}  # filled from the file's other passages
    _, ps = data.sample(1, 1, 1, None, fill=False)
    assert ps == ["B"]


def test_sampling_is_deterministic_per_seed_epoch(tiny_train_file):
    data = BiEncoderData(tiny_train_file)
    a = [data.sample(i, 2, 1, np.random.default_rng([1, 0, i])) for i in range(len(data))]
    b = [data.sample(i, 2, 1, np.random.default_rng([1, 0, i])) for i in range(len(data))]
    c = [data.sample(i, 2, 1, np.random.default_rng([1, 1, i])) for i in range(len(data))]
    assert a == b and a != c
    assert all(len(ps) == 4 for _, ps in a)
    assert epoch_batches(10, 4, 1, 0)[0].tolist() == epoch_batches(10, 4, 1, 0)[0].tolist()
    assert [len(x) for x in epoch_batches(10, 4, 1, 0)] == [4, 4, 2]
    assert sorted(np.concatenate(epoch_batches(10, 4, 1, 3)).tolist()) == list(range(10))


def test_ranks_split_the_global_batch_in_order():
    batch = np.arange(5)
    assert [split_for_rank(batch, r, 2).tolist() for r in range(2)] == [[0, 1, 2], [3, 4]]


def test_each_chunk_is_padded_to_its_own_longest():
    chunks = chunked([[1] * 9, [1] * 2, [1] * 3, [1] * 4, [1]], 2, 0)
    assert [c["input_ids"].shape for c in chunks] == [(2, 9), (2, 4), (1, 1)]
    assert chunks[1]["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert chunks[1]["input_ids"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_sorted_chunks_pad_little_and_keep_the_order():
    from dpr.training.data import sorted_chunks

    ids = [[1] * 2, [1] * 9, [1] * 3, [1] * 8]
    chunks, order = sorted_chunks(ids, 2, 0)
    assert order.tolist() == [1, 3, 2, 0]
    assert [c["input_ids"].shape for c in chunks] == [(2, 9), (2, 3)]
    assert sorted_chunks(ids, 4, 0)[1] is None
