"""Every script that reads an input file fails bad input the same way: exit status 2, one `error:` line on stderr
that names the file, no traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _bad_files(tmp: Path) -> dict[str, Path]:
    bad_json = tmp / "bad.json"
    bad_json.write_text('{"question_id": "q1", "question": "北京"}\n{"question_id": ', encoding="utf-8")
    bad_tsv = tmp / "bad.tsv"
    bad_tsv.write_text("id\ttext\ttitle\np1\tonly two columns\n", encoding="utf-8")
    bad_dpr = tmp / "bad_dpr.json"
    bad_dpr.write_text('[{"question": "x", "positive_ctxs": [{"text": 1}]}]', encoding="utf-8")
    good_tsv = tmp / "good.tsv"
    good_tsv.write_text("id\ttext\ttitle\np1\t北京是首都\t\n", encoding="utf-8")
    squad = tmp / "cmrc"
    squad.mkdir()
    for name in ("cmrc2018_train.json", "cmrc2018_dev.json", "cmrc2018_trial.json"):
        (squad / name).write_text("{not json", encoding="utf-8")
    release = tmp / "release"
    release.mkdir()
    (release / "train.json").write_text('{"question_id": "t1", "question": "x", "answer_paragraphs": []}\n{oops\n',
                                        encoding="utf-8")
    (release / "dev.json").write_text("", encoding="utf-8")
    (release / "passage_collection.json").write_text('{"paragraph_id": "p1", "paragraph_text": "t"}\n',
                                                     encoding="utf-8")
    from tests.tiny_encoder import save_tiny_biencoder

    model = save_tiny_biencoder(tmp / "model")
    return {"json": bad_json, "tsv": bad_tsv, "dpr": bad_dpr, "good_tsv": good_tsv, "cmrc": squad,
            "release": release, "model": model}


CASES = {
    "data/preprocess_dureader.py": (lambda f, o: ["--input_dir", f["release"], "--output_dir", o, "--no_bm25"],
                                    "train.json:2"),
    "data/build_cmrc2018_retrieval.py": (lambda f, o: ["--cmrc_dir", f["cmrc"], "--output_dir", o],
                                         "cmrc2018_"),
    "data/bm25_retriever.py": (lambda f, o: ["--qa_file", f["json"], "--ctx_file", f["good_tsv"], "--out_file",
                                             f"{o}/bm25.json", "--no_cache"], "bad.json:2"),
    "data/evaluate_dureader.py": (lambda f, o: [f["json"], f["json"]], "bad.json:1"),
    "train_dense_encoder.py": (lambda f, o: ["--pretrained_model_cfg", f["model"] / "question_encoder", "--train_file",
                                             f["dpr"], "--output_dir", o, "--num_workers", "0", "--no_progress"],
                               "bad_dpr.json:1"),
    "train_reranker.py": (lambda f, o: ["--pretrained_model_cfg", f["model"] / "question_encoder", "--train_file",
                                        f["dpr"], "--output_dir", o, "--no_progress"], "bad_dpr.json:1"),
    "generate_dense_embeddings.py": (lambda f, o: ["--model_file", f["model"], "--ctx_file", f["tsv"], "--out_file",
                                                   f"{o}/emb"], "bad.tsv:2"),
    "dense_retriever.py": (lambda f, o: ["--qa_file", f["json"], "--index_dir", o, "--out_file", f"{o}/r.json"],
                           "bad.json:2"),
    "data/rerank.py": (lambda f, o: ["--in_file", f["json"], "--qa_file", f["json"], "--ctx_file", f["good_tsv"],
                                     "--reranker", o, "--out_file", f"{o}/r.json"], "bad.json:2"),
    "data/denoise_negatives.py": (lambda f, o: ["--in_file", f["dpr"], "--out_file", f"{o}/d.json", "--reranker", o],
                                  "bad_dpr.json:1"),
    "data/subset_passages.py": (lambda f, o: ["--ctx_file", f["tsv"], "--qa_file", f["json"], "--out_file",
                                              f"{o}/s.tsv", "--sibling_ids"], "bad."),
}


@pytest.mark.parametrize("script", list(CASES))
def test_bad_input_is_one_error_line_and_status_2(tmp_path, script):
    files = _bad_files(tmp_path)
    make_args, names = CASES[script]
    args = [str(a) for a in make_args(files, tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DPR_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    assert names in errors[0], errors[0]
