"""run_demo.sh end to end at toy size (tiny random model, a few dozen questions), so the quick start cannot rot."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from dpr.models.encoder import Encoder, EncoderSettings
from tests.data_scripts import ROOT, load_script
from tests.tiny_encoder import tiny_bert, tiny_tokenizer

fetch = load_script("fetch_cmrc2018")


@pytest.mark.slow
def test_demo_at_toy_size(tmp_path):
    if fetch.find_local() is None:
        pytest.skip(f"CMRC2018 not found in {[str(d) for d in fetch.candidates()]}")
    model = tmp_path / "tiny"
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="问", passage_prefix="文")
    Encoder(tiny_bert(1), settings).save_pretrained(model, tiny_tokenizer())
    demo = tmp_path / "demo"
    env = dict(os.environ, DEMO_DIR=str(demo), MODEL=str(model), TRAIN_QS="24", BATCH_SIZE="8", Q_CHUNK="4",
               CTX_CHUNK="4", TRAIN_P_LEN="64", P_LEN="64", Q_LEN="32", ENC_BATCH="32", DEV_QS="16",
               VAL_AV_RANK_MAX_QS="16", WARMUP_STEPS="1", EVAL_EVERY="1", OMP_NUM_THREADS="1")
    run = subprocess.run(["bash", str(ROOT / "run_demo.sh")], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + (demo / "demo.log").read_text()[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "retriever" not in line]
    assert [r.split("|")[1].strip() for r in rows] == [
        "BM25 (jieba + bm25s)", "tiny zero-shot", "fine-tuned (gradient cache)", "hybrid: fine-tuned + BM25 (0.3)"]
    for name in ("bm25_test", "zeroshot_test", "finetuned_test", "hybrid_test"):
        metrics = json.loads((demo / f"{name}.metrics.json").read_text())
        assert metrics["QueriesRanked"] == 1000 and 0 <= metrics["MRR@10"] <= 1
    submission = json.loads((demo / "finetuned_test.json").read_text())
    assert len(submission) == 1000 and all(len(v) == 50 for v in submission.values())
    hybrid = json.loads((demo / "hybrid_test.json").read_text())
    assert len(hybrid) == 1000 and all(len(v) == 50 for v in hybrid.values()) and hybrid != submission
    assert list((demo / "checkpoints").glob("*.png")), "the training plot is missing"
    train_log = [json.loads(line) for line in (demo / "checkpoints" / "train_log.jsonl").read_text().splitlines()]
    points = [(r["step"], r["end_of_epoch"]) for r in train_log if r["type"] == "validation"]
    assert points == [(1, False), (2, False), (3, True)], "the demo's dev points within the epoch (EVAL_EVERY)"

    # the one-question command the demo prints answers a held-out question as the batch run ranked it
    ask = next(line for line in run.stdout.splitlines() if line.startswith("ask the fine-tuned model"))
    argv = shlex.split(ask.split(": ", 1)[1])
    first = json.loads((demo / "finetuned_test.rerank.jsonl").read_text(encoding="utf-8").splitlines()[0])
    argv[argv.index("--query") + 1] = first["question"]
    r = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split(maxsplit=3) for line in r.stdout.splitlines()]
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5"] and all(len(row) == 4 for row in rows)
    top = first["passages"][0]["score"]
    assert float(rows[0][1]) == pytest.approx(top, abs=1e-4)
    assert rows[0][2] in {p["passage_id"] for p in first["passages"] if p["score"] > top - 1e-4}


@pytest.mark.slow
def test_demo_with_a_reranker_at_toy_size(tmp_path):
    """RERANK=1: a reranker trained by run_train_reranker.sh reranks the hybrid list's top RR_DEPTH; one more row
    and its wall time (the other rows as without it)."""
    if fetch.find_local() is None:
        pytest.skip(f"CMRC2018 not found in {[str(d) for d in fetch.candidates()]}")
    model = tmp_path / "tiny"
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="问", passage_prefix="文")
    Encoder(tiny_bert(1), settings).save_pretrained(model, tiny_tokenizer())
    demo = tmp_path / "demo"
    env = dict(os.environ, DEMO_DIR=str(demo), MODEL=str(model), TRAIN_QS="16", BATCH_SIZE="8", Q_CHUNK="8",
               CTX_CHUNK="8", TRAIN_P_LEN="64", P_LEN="64", Q_LEN="32", ENC_BATCH="32", DEV_QS="8",
               VAL_AV_RANK_MAX_QS="8", WARMUP_STEPS="1", EVAL_EVERY="1", OMP_NUM_THREADS="1", RERANK="1",
               RR_TRAIN_QS="16", RR_BATCH="4", RR_GROUP_SIZE="4", RR_MAX_LEN="64", RR_DEV_QS="8", RR_DEPTH="10",
               RR_WARMUP_STEPS="1")
    run = subprocess.run(["bash", str(ROOT / "run_demo.sh")], env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + (demo / "demo.log").read_text()[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "retriever" not in line]
    assert [r.split("|")[1].strip() for r in rows] == [
        "BM25 (jieba + bm25s)", "tiny zero-shot", "fine-tuned (gradient cache)", "hybrid: fine-tuned + BM25 (0.3)",
        "hybrid + reranker (top 10)"]
    wall = next(line for line in run.stdout.splitlines() if line.startswith("reranker wall time: "))
    assert "16 train questions" in wall and "top 10 of 1000 questions" in wall
    metrics = json.loads((demo / "hybrid_rerank_test.metrics.json").read_text())
    assert metrics["QueriesRanked"] == 1000 and 0 <= metrics["MRR@10"] <= 1
    hybrid = json.loads((demo / "hybrid_test.json").read_text())
    reranked = json.loads((demo / "hybrid_rerank_test.json").read_text())
    assert reranked.keys() == hybrid.keys() and reranked != hybrid
    for qid, pids in hybrid.items():  # only the top 10 moved, among themselves
        assert reranked[qid][10:] == pids[10:] and sorted(reranked[qid][:10]) == sorted(pids[:10])
    assert list((demo / "reranker_checkpoints").glob("dpr_reranker.*.reranker"))
    ask = next(line for line in run.stdout.splitlines() if line.startswith("ask with the reranker"))
    assert "--reranker " in ask and "--reranker_depth 10" in ask
