import json

import pytest

from dpr.data.formats import (
    DPRJsonWriter,
    PassagesWriter,
    read_dpr_json,
    read_passages_tsv,
    read_questions,
    write_dpr_json,
)
from dpr.utils.io import InputError, atomic_write


def test_passages_tsv_round_trip_and_cleaning(tmp_path):
    p = tmp_path / "passages.tsv"
    with atomic_write(p) as f:
        w = PassagesWriter(f)
        w.write("1", "有\t制表符\n和换行", "")
        w.write("2", "第二段", "标题")
    assert p.read_text().splitlines()[0] == "id\ttext\ttitle"
    assert list(read_passages_tsv(p)) == [("1", "有 制表符 和换行", ""), ("2", "第二段", "标题")]


def test_passages_tsv_errors_name_file_and_line(tmp_path):
    p = tmp_path / "passages.tsv"
    p.write_text("id\ttext\ttitle\n1\tok\t\n2\tmissing a column\n")
    with pytest.raises(InputError, match=r"passages.tsv:3: expected 3 tab-separated columns"):
        list(read_passages_tsv(p))
    p.write_text("pid\ttext\n")
    with pytest.raises(InputError, match=r"passages.tsv:1: expected the header"):
        list(read_passages_tsv(p))


def test_dpr_json_writer_streams_a_valid_list_and_is_atomic(tmp_path):
    p = tmp_path / "dual_train.json"
    n = write_dpr_json(p, [{"question": "问题一", "positive_ctxs": []}, {"question": "二"}])
    assert n == 2 and read_dpr_json(p) == [{"question": "问题一", "positive_ctxs": []}, {"question": "二"}]
    assert "问题一" in p.read_text(encoding="utf-8")  # not \u-escaped
    write_dpr_json(tmp_path / "empty.json", [])
    assert read_dpr_json(tmp_path / "empty.json") == []
    with pytest.raises(RuntimeError):
        with DPRJsonWriter(tmp_path / "crash.json") as w:
            w.write({"question": "x"})
            raise RuntimeError("crash")
    assert not (tmp_path / "crash.json").exists()
    (tmp_path / "bad.json").write_text(json.dumps([{"no_question": 1}]))
    with pytest.raises(InputError, match="entry 0"):
        read_dpr_json(tmp_path / "bad.json")


def test_read_questions_detects_the_three_formats(tmp_path):
    release = tmp_path / "dev.json"
    release.write_text(
        json.dumps({"question_id": "a", "question": "问\t题", "answer_paragraphs": [{"paragraph_id": "p1"}]}) + "\n"
        + json.dumps({"question_id": "b", "question": "无标注"}) + "\n")
    assert read_questions(release) == [("a", "问 题", ["p1"]), ("b", "无标注", None)]

    dpr = tmp_path / "dual_dev.json"
    dpr.write_text(json.dumps([{"question": "一", "question_id": "x", "positive_ctxs": [{"passage_id": "p9"}]},
                               {"question": "二", "positive_ctxs": []}]))
    assert read_questions(dpr) == [("x", "一", ["p9"]), ("1", "二", None)]

    tsv = tmp_path / "q.tsv"
    tsv.write_text("qid\tquestion\nq1\t第一个\nq2\t第二个\n")
    assert read_questions(tsv) == [("q1", "第一个", None), ("q2", "第二个", None)]
    tsv.write_text("q1\t第一个\nq2 no tab\n")
    with pytest.raises(InputError, match=r"q.tsv:2: expected 2 tab-separated columns"):
        read_questions(tsv)

    release.write_text(json.dumps({"question": "no id"}) + "\n")
    with pytest.raises(InputError, match=r"dev.json:1: missing key 'question_id'"):
        read_questions(release)
    empty = tmp_path / "empty.json"
    empty.write_text("\n \n")
    with pytest.raises(InputError, match="empty"):
        read_questions(empty)
