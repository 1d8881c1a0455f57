import json

from tests.data_scripts import ROOT, load_script


def test_bm25_retriever_writes_official_format(tmp_path, capsys):
    ctx = tmp_path / "passages.tsv"
    ctx.write_text("id\ttext\ttitle\na-0\t长江是中国最长的河流。\t\nb-0\t黄河是中国第二长河。\t\n"
                   "c-0\t北京是中国的首都。\t\n", encoding="utf-8")
    qa = tmp_path / "dev.json"
    qa.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in [
        {"question_id": "q1", "question": "中国最长的河流", "answer_paragraphs": [{"paragraph_id": "a-0"}]},
        {"question_id": "q2", "question": "首都", "answer_paragraphs": [{"paragraph_id": "b-0"}]}]), encoding="utf-8")
    out = tmp_path / "pred.json"
    result = load_script("bm25_retriever").main(["--qa_file", str(qa), "--ctx_file", str(ctx),
                                                  "--out_file", str(out), "--n_docs", "2"])
    pred = json.loads(out.read_text())
    assert pred["q1"][0] == "a-0" and len(pred["q1"]) == 2
    assert pred["q2"] == ["c-0"]  # only passages sharing a word are returned
    assert result["MRR@10"] == 0.5 and result["recall@50"] == 0.5
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["QueriesRanked"] == 2
    assert (tmp_path / "passages.jieba" / "meta.json").is_file()


def test_cmrc_dir_default_follows_env(tmp_path, monkeypatch):
    from dpr.data.cmrc import default_cmrc_dir

    monkeypatch.setenv("CMRC2018_DIR", str(tmp_path))
    assert default_cmrc_dir(ROOT) == tmp_path
    monkeypatch.delenv("CMRC2018_DIR")
    assert default_cmrc_dir(tmp_path / "repo") == tmp_path / "repo" / "data" / "cmrc2018"
    (tmp_path / "shared" / "data" / "cmrc2018").mkdir(parents=True)
    assert default_cmrc_dir(tmp_path / "repo") == tmp_path / "shared" / "data" / "cmrc2018"


def test_build_script_reports_missing_files(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="ymcui/cmrc2018"):
        load_script("build_cmrc2018_retrieval").main(["--cmrc_dir", str(tmp_path), "--output_dir",
                                                       str(tmp_path / "o")])
