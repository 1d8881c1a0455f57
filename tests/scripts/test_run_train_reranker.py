"""run_train_reranker.sh: a tiny end-to-end run whose chosen reranker directory the checkpoint CLI prints, the
torchrun launch, and a missing training file as one error line."""
import os
import subprocess
import sys
from pathlib import Path

from tests.scripts.test_run_scripts import _stub_bin
from tests.training.builders import make_model_dir
from tests.training.reranker_builders import make_planted_json

ROOT = Path(__file__).resolve().parents[2]


def sh(env):
    return subprocess.run(["sh", "run_train_reranker.sh"], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=600)


def test_run_train_reranker_end_to_end(tmp_path):
    model = make_model_dir(tmp_path / "model", dropout=0.0)
    env = {"MODEL": str(model), "TRAIN_FILE": str(make_planted_json(tmp_path / "t.json", 16, seed=1)),
           "DEV_FILE": str(make_planted_json(tmp_path / "d.json", 4, seed=2)), "OUTPUT_DIR": str(tmp_path / "out"),
           "BATCH_SIZE": "8", "GROUP_SIZE": "3", "MAX_LEN": "48", "EPOCHS": "1", "WARMUP_STEPS": "0", "LR": "1e-3",
           "PRECISION": "", "EXTRA": "--no_progress"}
    r = sh(env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "groups of 3" in r.stderr and "precision fp32" in r.stderr  # GROUP_SIZE and PRECISION= reached the script
    pick = subprocess.run([sys.executable, "-m", "dpr.training.checkpoint", str(tmp_path / "out"), "--reranker"],
                          cwd=ROOT, capture_output=True, text=True)
    assert pick.returncode == 0, pick.stderr
    chosen = Path(pick.stdout.strip())
    assert chosen.name == "dpr_reranker.0.2.reranker" and (chosen / "dpr_reranker.json").is_file()


def test_run_train_reranker_launches_torchrun_and_checks_its_files(tmp_path):
    bin_dir = _stub_bin(tmp_path, ["python", "torchrun"])
    train = tmp_path / "train.json"
    train.write_text("[]")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "MODEL": "multilingual-e5-small", "TRAIN_FILE": str(train),
           "DEV_FILE": ""}
    r = sh({**env, "NPROC": "2"})
    assert r.returncode == 0, r.stderr
    call = (tmp_path / "calls").read_text()
    assert call.startswith("torchrun") and "--nproc_per_node 2 train_reranker.py" in call and "--dev_file" not in call
    r = sh({**env, "TRAIN_FILE": str(tmp_path / "missing.json")})
    assert r.returncode == 2 and r.stderr.count("error:") == 1 and "missing.json not found" in r.stderr
