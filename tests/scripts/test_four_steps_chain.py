"""The four steps chain on their defaults: `python data/preprocess_dureader.py`, then `MODEL=<dir> sh run_train.sh`,
`sh run_gen_emb.sh`, `sh run_test.sh` with nothing but sizes set, on a toy release-layout set under
data/dureader_data/ of a scratch copy of the repository (scripts copied, the package linked)."""
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.training.builders import CHARS, make_model_dir

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _scratch_repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "dpr").symlink_to(ROOT / "dpr")
    for f in ROOT.glob("*.py"):
        shutil.copy(f, repo / f.name)
    for f in ROOT.glob("*.sh"):
        shutil.copy(f, repo / f.name)
    for f in (ROOT / "data").glob("*.py"):
        shutil.copy(f, repo / "data" / f.name)
    return repo


def _toy_release(root: Path, n_paragraphs: int = 24, seed: int = 0) -> None:
    """train/dev release JSON lines + passage_collection.json; each question copies words of its paragraph."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    paras = [(f"p{i}", "".join(rng.choice(CHARS) for _ in range(rng.randint(20, 40)))) for i in range(n_paragraphs)]
    with open(root / "passage_collection.json", "w", encoding="utf-8") as f:
        for pid, text in paras:
            f.write(json.dumps({"paragraph_id": pid, "paragraph_text": text}, ensure_ascii=False) + "\n")
    for split, rows in (("train", paras[:16]), ("dev", paras[16:])):
        with open(root / f"{split}.json", "w", encoding="utf-8") as f:
            for k, (pid, text) in enumerate(rows):
                q = {"question_id": f"{split}{k}", "question": text[3:11],
                     "answer_paragraphs": [{"paragraph_id": pid, "paragraph_text": text}]}
                f.write(json.dumps(q, ensure_ascii=False) + "\n")


def _run(cmd: list[str], repo: Path, env: dict) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(repo), **env}
    return subprocess.run(cmd, cwd=repo, env=full, capture_output=True, text=True, timeout=600)


def test_four_steps_chain_on_defaults(tmp_path):
    repo = _scratch_repo(tmp_path)
    _toy_release(repo / "data" / "dureader_data")
    model = make_model_dir(tmp_path / "model")

    r = _run(["python", "data/preprocess_dureader.py", "--num_hard_negatives", "4"], repo, {})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (repo / "data/dureader_data/retrieval_train_data/dual_train.json").is_file()

    sizes = {"BATCH_SIZE": "4", "Q_CHUNK": "2", "CTX_CHUNK": "4", "EPOCHS": "1", "WARMUP_STEPS": "1", "P_LEN": "48",
             "Q_LEN": "16", "HARD_NEGATIVES": "1", "DEV_BATCH_SIZE": "4", "VAL_AV_RANK_MAX_QS": "8",
             "LOG_BATCH_STEP": "1", "EXTRA": "--num_workers 0 --no_progress", "PRECISION": ""}
    r = _run(["sh", "run_train.sh"], repo, {"MODEL": str(model), **sizes})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dev file ./" in r.stderr or "dev file data/dureader_data/retrieval_train_data/dual_dev.json" in r.stderr
    ckps = list((repo / "outputs/macbert_model_ckp").glob("dpr_biencoder.0.*.question_encoder"))
    assert ckps, "no checkpoint in run_train.sh's default OUTPUT_DIR"

    r = _run(["sh", "run_gen_emb.sh"], repo, {"NUM_SHARDS": "2", "GPUS": "", "P_LEN": "48", "BATCH_SIZE": "8",
                                              "PRECISION": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "using " in r.stderr and "dpr_biencoder.0." in r.stderr  # the checkpoint it picked, said once
    assert sorted(p.name for p in (repo / "outputs/macbert_context_emb").glob("emb_shard*.npy")) == \
        ["emb_shard0.npy", "emb_shard1.npy"]

    r = _run(["sh", "run_test.sh"], repo, {"Q_LEN": "16", "BATCH_SIZE": "8", "PRECISION": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    sub = json.loads((repo / "outputs/dev_res.json").read_text(encoding="utf-8"))
    assert set(sub) == {f"dev{k}" for k in range(8)} and all(len(v) == 24 for v in sub.values())
    metrics = json.loads((repo / "outputs/dev_res.metrics.json").read_text(encoding="utf-8"))
    assert 0.0 <= metrics["MRR@10"] <= 1.0


@pytest.mark.parametrize("script,env,variable", [
    ("run_train.sh", {"MODEL": "/nonexistent/macbert"}, "MODEL="),
    ("run_train.sh", {"MODEL": "multilingual-e5-small"}, "TRAIN_FILE="),
    ("run_gen_emb.sh", {}, "set MODEL_FILE"),
    ("run_test.sh", {}, "set MODEL_FILE"),
])
def test_a_missing_input_is_one_line_naming_the_variable(tmp_path, script, env, variable):
    repo = _scratch_repo(tmp_path)
    r = _run(["sh", script], repo, env)
    assert r.returncode == 2
    assert variable in r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and script in errors[0]
