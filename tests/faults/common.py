"""Shared helpers for the fault tests: tiny offline models and data, script subprocesses, kill-when-seen."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import BertModel

from dpr.models.encoder import Encoder
from tests.tiny_encoder import CHARS, tiny_bert, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    """One thread per process (CI has 2 cores), offline, the repo importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def script(name: str, *args: object) -> list[str]:
    return [sys.executable, str(ROOT / name), *map(str, args)]


def run_script(name: str, *args: object, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(script(name, *args), cwd=ROOT, env=env(), capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def kill_when(cmd: list[str], ready: Callable[[str], bool], log: Path, timeout: float = 120.0) -> int:
    """Start cmd (stderr to `log`), SIGKILL it as soon as ready(stderr so far) holds; returns the exit code."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and not ready(log.read_text(errors="replace")):
            assert time.time() < deadline, "the condition to kill on never came"
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def save_tiny_model(path: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """A single random 2-layer hidden-32 BERT HF dir, as a pretrained starting point."""
    model = tiny_bert(seed)
    if dropout != 0.1:
        torch.manual_seed(seed)
        config = model.config
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
        model = BertModel(config, add_pooling_layer=False)
    Encoder(model).save_pretrained(path, tiny_tokenizer())
    return path


def random_text(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(lo, hi)))


def write_dpr_train(path: Path, n: int, seed: int = 0) -> Path:
    """n DPR JSON questions, each with one positive and two hard negatives."""
    rng = random.Random(seed)

    def ctx(i: int) -> dict:
        return {"title": "", "text": random_text(rng, 5, 30), "passage_id": str(i)}

    items = [{"question": random_text(rng, 3, 10), "answers": [], "positive_ctxs": [ctx(3 * i)],
              "negative_ctxs": [], "hard_negative_ctxs": [ctx(3 * i + 1), ctx(3 * i + 2)]} for i in range(n)]
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def visible_files(d: Path) -> list[Path]:
    """Files and dirs under d whose names do not start with a dot (what a user would take for output)."""
    return sorted(p for p in d.rglob("*") if not any(part.startswith(".") for part in p.relative_to(d).parts))


def temp_leftovers(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob(".*") if ".tmp" in p.name)
