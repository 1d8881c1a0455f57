import json

import pytest

from dpr.data.formats import read_dpr_json, read_passages_tsv
from dpr.data.preprocess import Options, detect_layout, run
from dpr.utils.io import InputError
from tests.data_scripts import load_script

# Family "fa" (three passages cut from one paragraph); fa-1 is the passage BM25 likes best for q1 after fa-0.
COLLECTION = [
    ("fa-0", "故宫位于北京市中心，是明清两代的皇家宫殿。"),
    ("fa-1", "故宫位于北京，故宫博物院成立于1925年。"),
    ("fa-2", "故宫的宫殿建筑是中国现存最大的木质结构古建筑群。"),
    ("fb-0", "长城是古代中国的防御工程，北京段最为有名。"),
    ("fb-1", "长城东起山海关，西至嘉峪关。"),
    ("p1", "北京是中国的首都，也是政治和文化中心。"),
    ("p2", "颐和园位于北京西郊，是皇家园林。"),
    ("p3", "天坛是明清皇帝祭天的地方，位于北京。"),
    ("p4", "上海是中国最大的经济中心城市。"),
    ("p5", "黄河是中国第二长河。"),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def question(qid, text, *pids, with_text=True):
    texts = dict(COLLECTION)
    return {"question_id": qid, "question": text, "answer_paragraphs": [
        {"paragraph_id": p, **({"paragraph_text": texts[p]} if with_text else {})} for p in pids]}


@pytest.fixture
def release(tmp_path):
    d = tmp_path / "release"
    d.mkdir()
    rows = [{"paragraph_id": p, "paragraph_text": t} for p, t in COLLECTION]
    rows[5]["paragraph_text"] = "北京是中国的首都，\x07也是政治\t和文化中心。"  # control char + tab: cleaned
    rows += [{"paragraph_id": "e1", "paragraph_text": ""}, {"paragraph_id": "e2", "paragraph_text": "NaN"},
             {"paragraph_id": "e3", "paragraph_text": None}, {"paragraph_id": "p2", "paragraph_text": "重复的id"}]
    write_jsonl(d / "passage_collection.json", rows)
    write_jsonl(d / "train.json", [question("q1", "故宫位于北京哪里", "fa-0"), question("q2", "长城东起哪里", "fb-1")])
    write_jsonl(d / "dev.json", [question("d1", "北京的皇家园林", "p2", with_text=False)])
    write_jsonl(d / "test.json", [{"question_id": "t1", "question": "没有标注的问题"}])
    return d


def test_release_layout_end_to_end(release, tmp_path):
    (release / "collection_meta.json").write_text(json.dumps({"id_scheme": "paragraph-k"}))  # fa-k: one paragraph
    out = tmp_path / "out"
    report = run(Options(release, out, num_hard_negatives=3))
    assert report["layout"] == "release"
    c = report["counts"]
    assert c["passages"] == 10 and c["passages_dropped_empty"] == 3 and c["passages_duplicate_id"] == 1
    assert c["test_unlabelled_not_converted"] == 1

    passages = list(read_passages_tsv(out / "passages.tsv"))
    assert [p for p, _, _ in passages] == [p for p, _ in COLLECTION]
    assert passages[5][1] == "北京是中国的首都，也是政治 和文化中心。"
    assert passages[6][1] == dict(COLLECTION)["p2"]  # the duplicate id kept the first
    assert not list(out.glob("passages_shard*"))  # no shard files: step 3 reads its own rows of passages.tsv

    train = read_dpr_json(out / "retrieval_train_data" / "dual_train.json")
    q1 = train[0]
    assert q1["question"] == "故宫位于北京哪里" and q1["question_id"] == "q1"
    assert [c["passage_id"] for c in q1["positive_ctxs"]] == ["fa-0"]
    negs = [c["passage_id"] for c in q1["hard_negative_ctxs"]]
    assert len(negs) == 3 and not {"fa-0", "fa-1", "fa-2"} & set(negs)  # positives and their siblings excluded
    assert all(c["text"] == dict(COLLECTION)[c["passage_id"]] for c in q1["hard_negative_ctxs"] if c["passage_id"] != "p1")
    assert set(q1) == {"question", "question_id", "answers", "positive_ctxs", "negative_ctxs", "hard_negative_ctxs"}
    q2negs = {c["passage_id"] for c in train[1]["hard_negative_ctxs"]}
    assert not {"fb-0", "fb-1"} & q2negs

    dev = read_dpr_json(out / "retrieval_train_data" / "dual_dev.json")
    assert dev[0]["question_id"] == "d1"
    assert dev[0]["positive_ctxs"][0]["text"] == dict(COLLECTION)["p2"]  # text fetched from the collection
    assert "p2" not in {c["passage_id"] for c in dev[0]["hard_negative_ctxs"]}
    assert not (out / "retrieval_train_data" / "dual_test.json").exists()
    assert json.loads((out / "preprocess_stats.json").read_text())["counts"]["passages"] == 10


def test_dev_topk_gives_first_non_gold_negatives(release, tmp_path):
    topk = tmp_path / "topk.json"
    topk.write_text(json.dumps({"d1": ["p2", "fa-1", "p9-missing", "p3", "p1", "p4"]}))
    out = tmp_path / "out"
    run(Options(release, out, num_hard_negatives=2, dev_topk=topk, bm25=False))
    dev_hn = read_dpr_json(out / "retrieval_train_data" / "dev_with_hn.json")
    assert [c["passage_id"] for c in dev_hn[0]["hard_negative_ctxs"]] == ["fa-1", "p3"]
    assert read_dpr_json(out / "retrieval_train_data" / "dual_dev.json")[0]["hard_negative_ctxs"] == []


def test_bad_line_names_file_and_line_and_can_be_skipped(release, tmp_path):
    coll = release / "passage_collection.json"
    coll.write_text(coll.read_text(encoding="utf-8") + "{not json\n" + json.dumps({"paragraph_id": "x"}) + "\n",
                    encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"passage_collection.json:15: malformed JSON line"):
        run(Options(release, out, bm25=False))
    assert not (out / "passages.tsv").exists()  # nothing half-written
    assert [p.name for p in out.iterdir()] == []
    report = run(Options(release, out, bm25=False, skip_bad_lines=True))
    assert report["bad_lines"] == {str(coll): 2}
    assert report["counts"]["passages"] == 10


def test_missing_files_name_the_layouts(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "train.json").write_text("")
    with pytest.raises(InputError, match=r"release layout needs .*missing: dev.json, passage_collection.json.*"
                                         r"baseline layout needs train/dual.train.tsv"):
        detect_layout(tmp_path / "in")
    with pytest.raises(InputError, match="baseline layout needs"):
        detect_layout(tmp_path / "in", "baseline")


@pytest.fixture
def baseline(tmp_path):
    d = tmp_path / "data" / "dureader-retrieval-baseline-dataset"
    (d / "train").mkdir(parents=True)
    (d / "dev").mkdir()
    (d / "passage-collection").mkdir()
    texts = [t for _, t in COLLECTION]
    (d / "passage-collection" / "part-00").write_text(
        "".join(f"null\tnull\t{t}\tnull\n" for t in texts[:6]), encoding="utf-8")
    (d / "passage-collection" / "part-01").write_text(
        "".join(f"null\tnull\t{t}\tnull\n" for t in texts[6:]) + "null\tnull\tnan\tnull\n", encoding="utf-8")
    ids = {str(i): f"id{i}" for i in range(len(texts) + 1)}
    (d / "passage-collection" / "passage2id.map.json").write_text(json.dumps(ids))
    rows = [("故宫在哪", texts[0], texts[3]), ("故宫在哪", texts[0], texts[4]), ("故宫在哪", texts[0], texts[0]),
            ("长城", texts[4], texts[9]), ("长城", texts[4], "不在集合里的负例")]
    (d / "train" / "dual.train.tsv").write_text(
        "".join(f"{q}\tnull\t{p}\tnull\t{n}\t0\n" for q, p, n in rows), encoding="utf-8")
    write_jsonl(d / "dev" / "dev.json", [{"question_id": "d1", "question": "北京的皇家园林", "answer_paragraphs": [
        {"paragraph_id": "id6", "paragraph_text": texts[6]}]}])
    return d


def test_baseline_layout_end_to_end(baseline, tmp_path):
    out = tmp_path / "out"
    report = run(Options(baseline.parent, out, num_hard_negatives=30))  # found in the subfolder
    assert report["layout"] == "baseline"
    assert report["counts"]["passages"] == 10 and report["counts"]["passages_dropped_empty"] == 1
    assert [p for p, _, _ in read_passages_tsv(out / "passages.tsv")] == [f"id{i}" for i in range(10)]
    train = read_dpr_json(out / "retrieval_train_data" / "dual_train.json")
    assert [q["question"] for q in train] == ["故宫在哪", "长城"]
    assert train[0]["positive_ctxs"] == [{"title": "", "text": COLLECTION[0][1], "passage_id": "id0"}]
    # the file's own negatives, in order, without repeats of the positive
    assert [c["passage_id"] for c in train[0]["hard_negative_ctxs"]] == ["id3", "id4"]
    assert [c["passage_id"] for c in train[1]["hard_negative_ctxs"]] == ["id9", None]
    assert report["counts"]["train_passages_without_id"] == 1
    dev = read_dpr_json(out / "retrieval_train_data" / "dual_dev.json")
    assert dev[0]["question_id"] == "d1" and dev[0]["hard_negative_ctxs"]  # BM25-mined: the file has none
    assert "id6" not in {c["passage_id"] for c in dev[0]["hard_negative_ctxs"]}


def test_baseline_bad_train_row(baseline, tmp_path):
    tsv = baseline / "train" / "dual.train.tsv"
    tsv.write_text(tsv.read_text(encoding="utf-8") + "only\ttwo columns\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"dual.train.tsv:6: expected 6 tab-separated columns"):
        run(Options(baseline, tmp_path / "out", bm25=False))
    report = run(Options(baseline, tmp_path / "out", bm25=False, skip_bad_lines=True))
    assert report["bad_lines"] == {str(tsv): 1}


def _negatives(out, split="dual_train.json"):
    return [[c["passage_id"] for c in q["hard_negative_ctxs"]] for q in read_dpr_json(out / "retrieval_train_data" / split)]


def _doc_k_collection(tmp_path):
    """Ten independent passages doc-0 … doc-9 (a user's ids, not cut from one paragraph); the question's is doc-3."""
    d = tmp_path / "docs"
    d.mkdir()
    texts = [f"北京的第{i}个景点在城区{'东西南北'[i % 4]}边，游客很多。" for i in range(10)]
    write_jsonl(d / "passage_collection.json", [{"paragraph_id": f"doc-{i}", "paragraph_text": t}
                                                 for i, t in enumerate(texts)])
    q = {"question_id": "q1", "question": "北京的第3个景点在哪", "answer_paragraphs": [
        {"paragraph_id": "doc-3", "paragraph_text": texts[3]}]}
    write_jsonl(d / "train.json", [q])
    write_jsonl(d / "dev.json", [{**q, "question_id": "d1"}])
    return d


def test_ids_ending_in_digits_are_not_siblings_unless_told(tmp_path):
    d = _doc_k_collection(tmp_path)
    run(Options(d, tmp_path / "out", num_hard_negatives=4))
    negs = _negatives(tmp_path / "out")[0]
    assert len(negs) == 4 and "doc-3" not in negs and all(n.startswith("doc-") for n in negs)
    assert not (tmp_path / "out" / "collection_meta.json").exists()
    run(Options(d, tmp_path / "told", num_hard_negatives=4, sibling_ids=True))
    assert _negatives(tmp_path / "told")[0] == []  # every doc-k is a sibling of doc-3


@pytest.mark.parametrize("how", ["record", "flag", "neither"])
def test_sibling_rule_from_the_record_or_the_flag(release, tmp_path, how):
    if how == "record":
        (release / "collection_meta.json").write_text(json.dumps({"id_scheme": "paragraph-k", "made_by": "test"}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "collection_meta.json").write_text(json.dumps({"id_scheme": "paragraph-k", "made_by": "an older run"}))
    run(Options(release, out, num_hard_negatives=3, sibling_ids=how == "flag"))
    q1, q2 = (set(n) for n in _negatives(out))
    if how == "neither":
        assert "fa-1" in q1 and not {"fa-0"} & q1 and not {"fb-1"} & q2
        assert not (out / "collection_meta.json").exists()  # the older run's record would misdescribe these ids
        return
    assert not {"fa-0", "fa-1", "fa-2"} & q1 and not {"fb-0", "fb-1"} & q2
    meta = json.loads((out / "collection_meta.json").read_text())  # beside passages.tsv, for the later steps
    assert meta["id_scheme"] == "paragraph-k"
    assert meta["made_by"] == ("test" if how == "record" else "preprocess_dureader.py --sibling_ids")


def test_negative_with_a_positives_text_under_another_id_is_dropped(release, tmp_path):
    coll = release / "passage_collection.json"
    dup = {"paragraph_id": "copy", "paragraph_text": dict(COLLECTION)["fa-0"]}
    coll.write_text(coll.read_text(encoding="utf-8") + json.dumps(dup, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    report = run(Options(release, out, num_hard_negatives=3))
    q1 = read_dpr_json(out / "retrieval_train_data" / "dual_train.json")[0]
    assert "copy" not in [c["passage_id"] for c in q1["hard_negative_ctxs"]]
    assert len(q1["hard_negative_ctxs"]) == 3  # refilled from further down the ranking
    assert report["counts"]["negatives_dropped_identical_text"] >= 1
    assert all(c["text"] != q1["positive_ctxs"][0]["text"] for c in q1["hard_negative_ctxs"])


def test_dev_topk_skips_a_passage_with_the_gold_text(release, tmp_path):
    coll = release / "passage_collection.json"
    dup = {"paragraph_id": "copy", "paragraph_text": dict(COLLECTION)["p2"]}
    coll.write_text(coll.read_text(encoding="utf-8") + json.dumps(dup, ensure_ascii=False) + "\n", encoding="utf-8")
    topk = tmp_path / "topk.json"
    topk.write_text(json.dumps({"d1": ["p2", "copy", "fa-1", "p3"]}))
    out = tmp_path / "out"
    run(Options(release, out, num_hard_negatives=2, dev_topk=topk, bm25=False))
    assert _negatives(out, "dev_with_hn.json")[0] == ["fa-1", "p3"]


def test_baseline_negative_equal_to_a_later_rows_positive_is_dropped(baseline, tmp_path):
    texts = [t for _, t in COLLECTION]
    rows = [("故宫在哪", texts[0], texts[1]), ("故宫在哪", texts[1], texts[3]), ("故宫在哪", texts[0], texts[4])]
    (baseline / "train" / "dual.train.tsv").write_text(
        "".join(f"{q}\tnull\t{p}\tnull\t{n}\t0\n" for q, p, n in rows), encoding="utf-8")
    run(Options(baseline, tmp_path / "out", bm25=False))
    train = read_dpr_json(tmp_path / "out" / "retrieval_train_data" / "dual_train.json")
    assert [c["passage_id"] for c in train[0]["positive_ctxs"]] == ["id0", "id1"]
    assert [c["passage_id"] for c in train[0]["hard_negative_ctxs"]] == ["id3", "id4"]


def test_a_malformed_record_names_its_file_and_writes_nothing(release, tmp_path):
    (release / "collection_meta.json").write_text('{"id_scheme": "md5-k"}')
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"release/collection_meta.json: expected a JSON object whose \"id_scheme\""):
        run(Options(release, out, bm25=False))
    assert not out.exists() or list(out.iterdir()) == []


def test_the_scripts_sibling_ids_flag(tmp_path):
    d = _doc_k_collection(tmp_path)
    script = load_script("preprocess_dureader")
    common = ["--input_dir", str(d), "--num_hard_negatives", "4", "--num_shards", "1"]
    script.main(common + ["--output_dir", str(tmp_path / "plain")])
    script.main(common + ["--output_dir", str(tmp_path / "told"), "--sibling_ids"])
    assert len(_negatives(tmp_path / "plain")[0]) == 4 and _negatives(tmp_path / "told")[0] == []
    assert json.loads((tmp_path / "told" / "collection_meta.json").read_text())["id_scheme"] == "paragraph-k"


def _comparable(path):
    """The file's bytes; for a cache's meta.json, its record less the source path and mtime (two runs, two dirs)."""
    if path.name != "meta.json":
        return path.read_bytes()
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("source", "mtime_ns")}


def test_one_and_many_workers_write_byte_identical_outputs(release, tmp_path, monkeypatch):
    import dpr.data.bm25 as bm25
    monkeypatch.setattr(bm25, "TOKENIZE_CHUNK", 3)  # several chunks, several search processes, several index chunks
    monkeypatch.setattr(bm25, "SCORE_CHUNK_DOCS", 4)
    monkeypatch.setattr(bm25, "_MIN_QUERIES_A_WORKER", 1)
    outs = []
    for workers in (1, 3):
        out = tmp_path / f"out{workers}"
        report = run(Options(release, out, num_hard_negatives=3, num_workers=workers))
        assert report["counts"]["bm25_mined_questions"] == 3
        outs.append({str(p.relative_to(out)): _comparable(p) for p in sorted(out.rglob("*"))
                     if p.is_file() and p.name != "preprocess_stats.json"})  # (its timings differ)
    assert "passages.jieba/index/data.npy" in outs[0] and "retrieval_train_data/dual_train.json" in outs[0]
    assert outs[0] == outs[1]


def test_num_workers_defaults_to_every_core():
    assert Options("in", "out").num_workers == len(__import__("os").sched_getaffinity(0))
