"""run_gen_emb.sh + run_test.sh end to end with a tiny model (two 'GPU' workers; CUDA_VISIBLE_DEVICES is harmless
without CUDA), and a failing shard failing the script. Subprocesses: each costs a Python start-up."""
import json
import os
import subprocess
from pathlib import Path

from tests.tiny_encoder import random_passages, save_tiny_biencoder, write_passages_tsv

ROOT = Path(__file__).resolve().parents[2]


def sh(script, env):
    return subprocess.run(["sh", script], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)


def test_gen_emb_then_test(tmp_path):
    model = save_tiny_biencoder(tmp_path / "model")
    passages = random_passages(12, seed=4)
    ctx = write_passages_tsv(tmp_path / "passages.tsv", passages)
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps({"question_id": "q1", "question": passages[3][1][:8],
                               "answer_paragraphs": [{"paragraph_id": passages[3][0], "paragraph_text": ""}]},
                              ensure_ascii=False) + "\n", encoding="utf-8")
    common = {"MODEL_FILE": str(model), "CTX_FILE": str(ctx), "EMB_DIR": str(tmp_path / "emb"), "PRECISION": ""}
    gen = sh("run_gen_emb.sh", {**common, "NUM_SHARDS": "2", "GPUS": "0 1", "P_LEN": "64", "BATCH_SIZE": "4"})
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "emb").glob("*.npy")) == [f"emb_shard{k}.npy" for k in range(2)]
    test = sh("run_test.sh", {**common, "QA_FILE": str(dev), "OUT_FILE": str(tmp_path / "res.json"), "N_DOCS": "5"})
    assert test.returncode == 0, test.stderr[-2000:]
    assert len(json.loads((tmp_path / "res.json").read_text())["q1"]) == 5
    assert set(json.loads((tmp_path / "res.metrics.json").read_text())) >= {"MRR@10", "recall@1", "recall@50"}
    rerank = json.loads((tmp_path / "res.rerank.jsonl").read_text(encoding="utf-8"))
    assert "bm25_score" not in rerank["passages"][0]
    test = sh("run_test.sh", {**common, "QA_FILE": str(dev), "OUT_FILE": str(tmp_path / "hyb.json"), "N_DOCS": "5",
                              "HYBRID_ALPHA": "0.5"})
    assert test.returncode == 0, test.stderr[-2000:]
    rerank = json.loads((tmp_path / "hyb.rerank.jsonl").read_text(encoding="utf-8"))
    assert len(rerank["passages"]) == 5 and {"dense_score", "bm25_score"} <= set(rerank["passages"][0])
    assert "fused (convex, alpha 0.50" in test.stderr


def test_a_failing_shard_fails_the_script(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("no header\n")
    gen = sh("run_gen_emb.sh", {"MODEL_FILE": str(tmp_path / "none"), "CTX_FILE": str(bad),
                                "EMB_DIR": str(tmp_path / "emb"), "NUM_SHARDS": "1", "GPUS": "0", "PRECISION": ""})
    assert gen.returncode != 0 and "bad.tsv:1" in gen.stderr
