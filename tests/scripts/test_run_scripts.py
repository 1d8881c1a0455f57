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
    for k in range(2):  # one log per shard worker
        assert f"shard {k}/2: passages" in (tmp_path / "emb" / "logs" / f"emb_shard{k}.log").read_text()
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


def test_gen_emb_respects_the_schedulers_cuda_visible_devices(tmp_path):
    """A scheduler's CUDA_VISIBLE_DEVICES=3,5 beats nvidia-smi's list of every GPU on the machine (stand-ins for
    python and nvidia-smi record which device each shard got)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n3\\n4\\n5\\n'\n")
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$CUDA_VISIBLE_DEVICES $*" >> {tmp_path}/calls\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "CUDA_VISIBLE_DEVICES")}
    (tmp_path / "p.tsv").write_text("id\ttext\ttitle\n")
    base = {"PATH": f"{bin_dir}:{env['PATH']}", "EMB_DIR": str(tmp_path / "emb"), "NUM_SHARDS": "4",
            "MODEL_FILE": "m", "CTX_FILE": str(tmp_path / "p.tsv")}

    def devices(extra):
        (tmp_path / "calls").unlink(missing_ok=True)
        r = subprocess.run(["sh", "run_gen_emb.sh"], cwd=ROOT, env={**env, **base, **extra}, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        calls = [line.split() for line in (tmp_path / "calls").read_text().splitlines()]
        return sorted((c[c.index("--shard_id") + 1], c[0] if not c[0].startswith("generate") else "")
                      for c in calls)

    assert devices({"CUDA_VISIBLE_DEVICES": "3,5"}) == [("0", "3"), ("1", "5"), ("2", "3"), ("3", "5")]
    assert {d for _, d in devices({})} == {"0", "1", "2", "3"}  # no scheduler: nvidia-smi's GPUs
    assert {d for _, d in devices({"CUDA_VISIBLE_DEVICES": ""})} == {""}  # no GPU granted: CPU


def _stub_bin(tmp_path, names):
    """Stand-ins on PATH that record their arguments (and CUDA_VISIBLE_DEVICES) in tmp_path/calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        f = bin_dir / name
        f.write_text(f'#!/bin/sh\necho "{name} $CUDA_VISIBLE_DEVICES | $*" >> {tmp_path}/calls\n')
        f.chmod(0o755)
    return bin_dir


def test_gen_emb_shard_ids_encode_only_those_shards(tmp_path):
    """An array job (SHARD_IDS=$SLURM_ARRAY_TASK_ID) encodes its shards only; a shard outside NUM_SHARDS is an error."""
    bin_dir = _stub_bin(tmp_path, ["python"])
    (tmp_path / "p.tsv").write_text("id\ttext\ttitle\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GPUS", "CUDA_VISIBLE_DEVICES")}
    base = {**env, "PATH": f"{bin_dir}:{env['PATH']}", "EMB_DIR": str(tmp_path / "emb"), "NUM_SHARDS": "8",
            "MODEL_FILE": "m", "CTX_FILE": str(tmp_path / "p.tsv"), "GPUS": ""}
    r = subprocess.run(["sh", "run_gen_emb.sh"], cwd=ROOT, env={**base, "SHARD_IDS": "5 2"}, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[c.split().index("--shard_id") + 1] for c in calls] == ["5", "2"]
    r = subprocess.run(["sh", "run_gen_emb.sh"], cwd=ROOT, env={**base, "SHARD_IDS": "8"}, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "SHARD_IDS: 8 is not a shard of NUM_SHARDS=8" in r.stderr


def test_train_launches_torchrun_over_nodes(tmp_path):
    """NPROC alone: one node of torchrun; NNODES > 1 adds the rendezvous flags; neither: plain python."""
    bin_dir = _stub_bin(tmp_path, ["python", "torchrun"])
    train = tmp_path / "train.json"
    train.write_text("[]")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL": "multilingual-e5-small",
           "TRAIN_FILE": str(train), "DEV_FILE": str(train)}

    def launched(extra):
        (tmp_path / "calls").unlink(missing_ok=True)
        r = subprocess.run(["sh", "run_train.sh"], cwd=ROOT, env={**env, **extra}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return (tmp_path / "calls").read_text().split("|")[0].split()[0], (tmp_path / "calls").read_text()

    assert launched({})[0] == "python"
    prog, call = launched({"NPROC": "4"})
    assert prog == "torchrun" and "--nproc_per_node 4 train_dense_encoder.py" in call and "--nnodes" not in call
    prog, call = launched({"NPROC": "8", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.5"})
    assert prog == "torchrun"
    assert "--nnodes 2 --node_rank 1 --master_addr 10.0.0.5 --master_port 29500 --nproc_per_node 8" in call
