"""bench/recipe_cmrc_cpu.sh end to end at toy size (tiny random model, a synthetic DuReader-format corpus), so the
measured CMRC recipe cannot rot, and its settings reach training."""
import json
import math
import os
import subprocess

import pytest

from dpr.models.encoder import Encoder, EncoderSettings
from tests.data_scripts import ROOT
from tests.tiny_encoder import random_passages, tiny_bert, tiny_tokenizer, write_passages_tsv


def write_corpus(root):
    """passages.tsv (60), dev.json (release layout, 6 questions), retrieval_train_data/dual_{train,dev}.json."""
    passages = random_passages(60, seed=3)
    write_passages_tsv(root / "passages.tsv", passages)
    with open(root / "dev.json", "w", encoding="utf-8") as f:
        for i, (pid, text) in enumerate(passages[:6]):
            f.write(json.dumps({"question_id": f"D{i}", "question": text[:8], "answers": [text[:2]],
                                "answer_paragraphs": [{"paragraph_id": pid, "paragraph_text": text}]},
                               ensure_ascii=False) + "\n")

    def dpr(items):
        ctx = lambda p: {"title": "", "text": p[1], "passage_id": p[0]}  # noqa: E731
        return [{"question": pos[1][:8], "answers": [pos[1][:2]], "positive_ctxs": [ctx(pos)], "negative_ctxs": [],
                 "hard_negative_ctxs": [ctx(passages[(k + 7) % 60]), ctx(passages[(k + 13) % 60])]}
                for k, pos in items]
    (root / "retrieval_train_data").mkdir()
    (root / "retrieval_train_data" / "dual_train.json").write_text(
        json.dumps(dpr(list(enumerate(passages))[10:30]), ensure_ascii=False), encoding="utf-8")
    (root / "retrieval_train_data" / "dual_dev.json").write_text(
        json.dumps(dpr(list(enumerate(passages))[:6]), ensure_ascii=False), encoding="utf-8")


@pytest.mark.slow
def test_recipe_at_toy_size(tmp_path):
    model = tmp_path / "tiny"
    settings = EncoderSettings(pooling="mean", normalize=True, query_prefix="问", passage_prefix="文")
    Encoder(tiny_bert(1), settings).save_pretrained(model, tiny_tokenizer())
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_corpus(data)
    env = dict(os.environ, DATA=str(data), OUT=str(out), MODEL=str(model), TRAIN_QS="14", BATCH_SIZE="4",
               Q_CHUNK="2", CTX_CHUNK="4", LR="2e-4", WARMUP_STEPS="1", TEMPERATURE="0.05", HARD_NEGATIVES="2",
               TRAIN_P_LEN="64", P_LEN="64", ENC_BATCH="16", OMP_NUM_THREADS="1", HELDOUT_QS="6", ALPHAS="0 0.5 1")
    run = subprocess.run(["bash", str(ROOT / "bench" / "recipe_cmrc_cpu.sh")], env=env, capture_output=True,
                         text=True, timeout=900)
    log = (out / "recipe.log").read_text() if (out / "recipe.log").exists() else ""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + log[-3000:]
    rows = [line.split("|")[1].strip() for line in run.stdout.splitlines()
            if line.startswith("| ") and "retriever" not in line]
    sweep = json.loads((out / "heldout_sweep.json").read_text())
    assert sweep["best_alpha"] in (0, 0.5, 1) and len(sweep["rows"]) == 2 + 3
    assert rows == ["BM25 (jieba + bm25s)", "fine-tuned (this recipe)", f"hybrid, alpha {sweep['best_alpha']} (held-out)"]
    # the weight is chosen on the last 6 training questions, which training (the first 14) never saw
    held = json.loads((out / "heldout_train.json").read_text())
    trained = json.loads((data / "retrieval_train_data" / "dual_train.json").read_text())[:14]
    assert len(held) == 6 and not {e["question"] for e in held} & {e["question"] for e in trained}
    assert sweep["rows"][0]["QueriesRanked"] == 6
    for name in ("bm25_dev", "dense_dev", "hybrid_dev"):
        metrics = json.loads((out / f"{name}.metrics.json").read_text())
        assert metrics["QueriesRanked"] == 6 and 0 <= metrics["MRR@10"] <= 1
    assert len(json.loads((out / "dense_dev.json").read_text())) == 6
    # the settings reach training: 14 questions in batches of 4 -> 4 steps; peak lr; temperature; 1 + 2 passages
    steps = [json.loads(line) for line in (out / "checkpoints" / "train_log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if s.get("type") == "step"]
    assert len(steps) == math.ceil(14 / 4)
    assert max(s["lr"] for s in steps) == pytest.approx(2e-4)
    assert "temperature 0.05" in log and "3 passages per question" in log and "training: 14 questions" in log
    assert len(list((out / "emb").glob("emb_shard0.npy"))) == 1


def test_held_out_questions_that_training_would_reach_are_refused(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_corpus(data)
    env = dict(os.environ, DATA=str(data), OUT=str(out), MODEL="unused", TRAIN_QS="16", HELDOUT_QS="6")
    run = subprocess.run(["bash", str(ROOT / "bench" / "recipe_cmrc_cpu.sh")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0
    assert "TRAIN_QS=16 + HELDOUT_QS=6 overlap" in run.stderr and "lower TRAIN_QS to 14" in run.stderr
    assert not (out / "checkpoints").exists() and not (out / "heldout_train.json").exists()
