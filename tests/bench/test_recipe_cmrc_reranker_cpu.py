"""bench/recipe_cmrc_reranker_cpu.sh end to end at toy size (tiny random models, the base recipe's synthetic corpus),
DENOISE=1 included, so the reranker recipe cannot rot."""
import json
import os
import subprocess

import pytest

from dpr.models.encoder import Encoder, EncoderSettings
from tests.bench.test_recipe_cmrc_cpu import write_corpus
from tests.data_scripts import ROOT
from tests.tiny_encoder import tiny_bert, tiny_tokenizer


@pytest.mark.slow
def test_reranker_recipe_at_toy_size(tmp_path):
    model = tmp_path / "tiny"
    Encoder(tiny_bert(1), EncoderSettings(pooling="mean", normalize=True)).save_pretrained(model, tiny_tokenizer())
    data, recipe, out = tmp_path / "data", tmp_path / "recipe", tmp_path / "out"
    data.mkdir()
    recipe.mkdir()
    write_corpus(data)
    pids = [line.split("\t")[0] for line in (data / "passages.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    qids = [json.loads(line)["question_id"] for line in (data / "dev.json").read_text(encoding="utf-8").splitlines()]
    for name in ("hybrid_dev", "dense_dev"):  # stand-ins for the base recipe's runs
        (recipe / f"{name}.json").write_text(json.dumps({q: pids[i:i + 20] for i, q in enumerate(qids)}))
    env = dict(os.environ, DATA=str(data), RECIPE_OUT=str(recipe), OUT=str(out), RR_MODEL=str(model), MODEL=str(model),
               RR_TRAIN_QS="12", DEV_QS="4", RR_BATCH="4", GROUP_SIZE="3", MAX_LEN="48", WARMUP_STEPS="1",
               EVAL_EVERY="1", RR_DEV_QS="4", DEPTH="5", PRECISION="", DENOISE="1", DENOISE_THRESHOLD="0.5",
               OMP_NUM_THREADS="1", TRAIN_QS="14", BATCH_SIZE="4", Q_CHUNK="2", CTX_CHUNK="4", TRAIN_P_LEN="64",
               P_LEN="64", ENC_BATCH="16", HELDOUT_QS="0")
    run = subprocess.run(["bash", str(ROOT / "bench" / "recipe_cmrc_reranker_cpu.sh")], env=env, capture_output=True,
                         text=True, timeout=1200)
    log = (out / "recipe.log").read_text() if (out / "recipe.log").exists() else ""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + log[-3000:]
    rows = [line.split("|") for line in run.stdout.splitlines() if line.startswith("| ") and "MRR@10" not in line]
    assert [r[1].strip() for r in rows] == ["BM25", "hybrid (recipe_cmrc_cpu.sh)", "BM25 + reranker (top 5)",
                                           "hybrid + reranker (top 5)", "dense, plain BM25 negatives",
                                           "dense, denoised negatives"]
    assert all(float(r[6]) > 0 for r in rows[2:4])  # pairs/s of each reranking
    assert "CMRC dev, first 4 questions" in run.stdout
    curve = [line for line in run.stdout.splitlines() if line.strip().startswith("step ")]
    assert len(curve) >= 3 and "pairs      12" in curve[0]  # EVAL_EVERY=1: a point per step (4 x 3 pairs)
    hybrid = json.loads((recipe / "hybrid_dev.json").read_text())
    reranked = json.loads((out / "hybrid_reranked.json").read_text())
    assert list(reranked) == qids[:4]
    for q in reranked:
        assert reranked[q][5:] == hybrid[q][5:20] and sorted(reranked[q][:5]) == sorted(hybrid[q][:5])
    denoised = json.loads((out / "denoised_data" / "retrieval_train_data" / "dual_train.json").read_text())
    assert all("dropped_hard_negatives" in e for e in denoised)
    assert (out / "dense_denoised" / "dense_dev.metrics.json").is_file()
