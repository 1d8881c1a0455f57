import hashlib
import json

import pytest

from dpr.data.cmrc import build, locate_answer, split_paragraph
from dpr.utils.io import InputError


def test_split_paragraph_packs_sentences_up_to_max_chars():
    text = "第一句。第二句比较长一点！第三句？" + "很长的句子，" * 30 + "结束。"
    spans = split_paragraph(text, max_chars=15)
    assert all(e - s <= 15 for s, e in spans)
    assert "".join(text[s:e] for s, e in spans) == text  # nothing lost, nothing repeated
    assert text[spans[0][0]:spans[0][1]] == "第一句。第二句比较长一点！"  # packed at a sentence end
    assert text[spans[1][0]:spans[1][1]] == "第三句？很长的句子，"  # a long sentence is cut at its commas


def test_split_paragraph_drops_blank_edges():
    assert split_paragraph("  甲。  \n乙。 ", max_chars=3) == [(2, 4), (7, 9)]
    assert split_paragraph("  甲。  \n乙。 ", max_chars=10) == [(2, 9)]
    assert split_paragraph(" \n ", max_chars=10) == []


def test_locate_answer():
    ctx = "他在1990年出生，1990年毕业。"
    assert locate_answer(ctx, "1990年", 2) == (2, "exact")
    assert locate_answer(ctx, "1990年", 9) == (10, "searched")  # off by one: the nearest occurrence
    assert locate_answer(ctx, "1990年", -1) == (2, "searched")
    assert locate_answer(ctx, "不存在", 0) is None
    assert locate_answer(ctx, "", 0) is None


def squad(paragraphs):
    return {"version": "v1", "data": [{"id": "A", "title": "t", "paragraphs": paragraphs}]}


def write_cmrc(d, train, dev, trial):
    d.mkdir(exist_ok=True)
    for name, paras in (("train", train), ("dev", dev), ("trial", trial)):
        (d / f"cmrc2018_{name}.json").write_text(json.dumps(squad(paras), ensure_ascii=False), encoding="utf-8")


def read_lines(p):
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]


def test_build_relevance_ids_and_splits(tmp_path):
    ctx = "甲" * 8 + "。" + "乙" * 8 + "。" + "丙" * 8 + "。"  # three sentences of 9 chars; max 10 -> 3 passages
    h = hashlib.md5(ctx.encode()).hexdigest()
    train = [{"id": "P1", "context": ctx, "qas": [
        {"id": "Q1", "question": "乙是什么？", "answers": [{"text": "乙乙", "answer_start": 10}]},
        {"id": "Q2", "question": "跨句", "answers": [{"text": "甲。乙", "answer_start": 7}]},  # spans 2 passages
        {"id": "Q3", "question": "错位", "answers": [{"text": "丙丙丙", "answer_start": 3}]},  # bad start: searched
        {"id": "Q4", "question": "没有", "answers": [{"text": "丁", "answer_start": 0}]},  # not in context: skipped
    ]}]
    dev = [{"id": "P2", "context": "开发集。", "qas": [{"id": "D1", "question": "问", "answers": [
        {"text": "开发", "answer_start": 0}, {"text": "开发", "answer_start": -1}]}]}]
    trial = [{"id": "P3", "context": "试验集。", "qas": [{"id": "T1", "question": "问", "answers": [
        {"text": "试验", "answer_start": 0}]}, {"id": "T2", "question": " ", "answers": [
            {"text": "试验", "answer_start": 0}]}]}]
    write_cmrc(tmp_path / "cmrc", train, dev, trial)
    report = build(tmp_path / "cmrc", tmp_path / "out", max_chars=10)

    coll = read_lines(tmp_path / "out" / "passage_collection.json")
    assert [c["paragraph_id"] for c in coll[:3]] == [f"{h}-0", f"{h}-1", f"{h}-2"]
    assert coll[1]["paragraph_text"] == "乙" * 8 + "。"
    assert len(coll) == 5  # every passage of every split

    qs = {q["question_id"]: q for q in read_lines(tmp_path / "out" / "train.json")}
    gold = {k: [p["paragraph_id"] for p in q["answer_paragraphs"]] for k, q in qs.items()}
    assert gold == {"Q1": [f"{h}-1"], "Q2": [f"{h}-0", f"{h}-1"], "Q3": [f"{h}-2"]}
    assert qs["Q1"]["answers"] == ["乙乙"]
    assert report["train"]["answers_searched"] == 1
    assert report["train"]["answers_not_in_context"] == 1
    assert report["train"]["questions_without_usable_answer"] == 1

    assert [q["question_id"] for q in read_lines(tmp_path / "out" / "dev.json")] == ["D1"]
    test = read_lines(tmp_path / "out" / "test.json")  # trial is labelled like dev; the blank question is dropped
    assert [q["question_id"] for q in test] == ["T1"] and test[0]["answer_paragraphs"]
    assert report["test"]["questions_empty"] == 1

    meta = json.loads((tmp_path / "out" / "collection_meta.json").read_text())  # the ids are <paragraph>-<k>
    assert meta["id_scheme"] == "paragraph-k" and meta["max_chars"] == 10 and meta["made_by"] == "dpr.data.cmrc.build"

    build(tmp_path / "cmrc", tmp_path / "again", max_chars=10)  # stable ids
    assert (tmp_path / "again" / "passage_collection.json").read_bytes() == \
        (tmp_path / "out" / "passage_collection.json").read_bytes()


def test_missing_files_say_where_to_get_them(tmp_path):
    with pytest.raises(InputError, match=r"cmrc2018_train.json.*ymcui/cmrc2018.*squad-style-data"):
        build(tmp_path, tmp_path / "out")
