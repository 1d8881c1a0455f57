"""Training data: streaming JSON reader, compact store, deterministic sampling with top-up, per-chunk padding."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpr.training.data import BiEncoderData, chunked, epoch_batches, split_for_rank
from dpr.utils.io import InputError, iter_json_array


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


# ----- defect 1: the positive is the first unless --shuffle_positive_ctx; negatives vary either way -----

def _four_positives(tmp_path):
    return BiEncoderData(_write(tmp_path, [
        {"question": "q", "positive_ctxs": [_ctx(f"p{k}", f"P{k}") for k in range(4)],
         "hard_negative_ctxs": [_ctx(f"h{k}", f"H{k}") for k in range(6)]},
        {"question": "r", "positive_ctxs": [_ctx("x", "X")]},
    ]))


def _builder(data, shuffle_positive: bool, n_hard: int = 1):
    from dpr.models.encoder import EncoderSettings
    from dpr.training.data import BatchBuilder, SamplingConfig
    from tests.training.builders import make_tokenizer

    sampling = SamplingConfig(n_hard, 0, True, 5, shuffle_positive)
    return BatchBuilder(data, make_tokenizer(), EncoderSettings(), sampling, 16, 16, 4, 8)


def test_default_trains_on_the_first_positive_every_epoch_with_varying_negatives(tmp_path):
    data = _four_positives(tmp_path)
    builder = _builder(data, shuffle_positive=False)
    drawn = [builder.sample([0], epoch) for epoch in range(12)]
    assert {d[0] for d in drawn} == {data.positives[0][0]}  # always P0
    assert len({d[1] for d in drawn}) > 2  # the hard negative still varies by epoch


def test_shuffle_positive_ctx_varies_the_positive_and_not_the_negatives(tmp_path):
    data = _four_positives(tmp_path)
    first, shuffled = _builder(data, False), _builder(data, True)
    drawn = [shuffled.sample([0], epoch) for epoch in range(12)]
    assert len({d[0] for d in drawn}) >= 3  # varied positives among the 4
    assert [d[1:] for d in drawn] == [first.sample([0], e)[1:] for e in range(12)]


# ----- defect 2(a): false negatives across the global batch -----

def test_false_negative_pairs_by_id_and_by_text_over_all_positives(tmp_path):
    from dpr.training.data import false_negative_pairs

    data = BiEncoderData(_write(tmp_path, [
        # q0 has two positives; its second positive reappears as q1's hard negative under the same id, and its
        # first positive's text reappears under another id as q2's positive
        {"question": "q0", "positive_ctxs": [_ctx("a", "AAA", "t"), _ctx("b", "BBB")],
         "hard_negative_ctxs": [_ctx("n0", "N0")]},
        {"question": "q1", "positive_ctxs": [_ctx("c", "CCC")], "hard_negative_ctxs": [_ctx("b", "BBB")]},
        {"question": "q2", "positive_ctxs": [_ctx("a2", "AAA", "t")], "hard_negative_ctxs": [_ctx("n2", "N2")]},
        # same text without the title is another passage input: not a duplicate
        {"question": "q3", "positive_ctxs": [_ctx("d", "DDD")], "hard_negative_ctxs": [_ctx("a3", "AAA")]},
    ]))
    builder = _builder(data, False)
    passages = builder.sample([0, 1, 2, 3], 0)  # 2 per question: positive, one hard negative
    pairs = false_negative_pairs(data, [0, 1, 2, 3], passages, 2).tolist()
    # q0 masks column 3 (q1's negative 'b') and column 4 (q2's positive, same text as 'a'); q2 masks column 0
    assert sorted(pairs) == [[0, 3], [0, 4], [2, 0]]


def test_batches_carry_the_global_mask_and_a_fixed_number_of_tensors(tmp_path):
    from dpr.training.data import EpochBatches, unpack_chunks

    data = BiEncoderData(_write(tmp_path, [
        {"question": "q0", "positive_ctxs": [_ctx("a", "的的的")], "hard_negative_ctxs": [_ctx("n0", "一一")]},
        {"question": "q1", "positive_ctxs": [_ctx("c", "是是")], "hard_negative_ctxs": [_ctx("n1", "不不不")]},
        {"question": "q2", "positive_ctxs": [_ctx("e", "了了")], "hard_negative_ctxs": [_ctx("a", "的的的")]},
    ]))
    builder = _builder(data, False)
    builder.p_chunk = 1  # one passage per chunk: the tensor count must not grow with it
    batches = [np.array([0, 1, 2])]
    items = [EpochBatches(builder, batches, 0, 0, r, 2)[0] for r in range(2)]
    for item in items:  # every rank knows the whole global mask: q0 vs q2's negative (column 5)
        assert item["masked"].tolist() == [[0, 5]]
        tensors = [v for v in item.values() if isinstance(v, torch.Tensor)]
        tensors += [t for side in ("q", "p") for t in item[side].values()]
        assert len(tensors) <= 7  # 2 per side, 2 orders, the mask
    assert [len(unpack_chunks(it["p"])) for it in items] == [4, 2]
    assert items[0]["global_sizes"] == [2, 1]


def test_pack_unpack_round_trip():
    from dpr.training.data import pack_chunks, unpack_chunks

    chunks = chunked([[5] * 9, [6] * 2, [7] * 3, [8] * 4, [9]], 2, 0)
    back = unpack_chunks(pack_chunks(chunks))
    assert len(back) == len(chunks)
    for a, b in zip(chunks, back):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])


# ----- average rank: a pool of distinct passages -----

def test_average_rank_pool_holds_each_passage_once(tmp_path):
    from dpr.training.data import average_rank_pool

    data = BiEncoderData(_write(tmp_path, [
        {"question": "q0", "positive_ctxs": [_ctx("a", "A")], "hard_negative_ctxs": [_ctx("s", "S"), _ctx("t", "T")]},
        {"question": "q1", "positive_ctxs": [_ctx("b", "B")], "hard_negative_ctxs": [_ctx("s", "S"), _ctx("a", "A")]},
        {"question": "q2", "positive_ctxs": [_ctx("c", "T")], "hard_negative_ctxs": [_ctx("u", "U")]},
    ]))
    questions, pool, positive = average_rank_pool(data, 3, 2, 0)
    assert questions == ["q0", "q1", "q2"]
    assert pool == ["A", "S", "T", "B", "U"]  # S and A once; 'c' has the text of 't': one passage
    assert [pool[k] for k in positive] == ["A", "B", "T"]
