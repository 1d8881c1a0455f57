"""Two CPU processes (torchrun, gloo) give the same gradients as one process on the same global batch."""
from __future__ import annotations

import contextlib
import copy
import random
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch

from conftest import make_tokenizer, random_text
from dpr.models.encoder import Encoder
from dpr.training.data import chunked
from dpr.training.grad_cache import full_step
from dpr.training.loss import biencoder_nll

PPQ = 3
N_Q = 5  # splits 3 + 2 over two ranks: unequal shares are gathered too
TEMPERATURE = 0.1


def batch() -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(3)
    tok = make_tokenizer()
    return (tok([random_text(rng, 2, 12) for _ in range(N_Q)])["input_ids"],
            tok([random_text(rng, 3, 40) for _ in range(N_Q * PPQ)])["input_ids"])


def towers(model_dir) -> tuple[Encoder, Encoder]:
    q = Encoder.from_pretrained(model_dir).double()
    return q, copy.deepcopy(q)


def flat_grads(q_enc: Encoder, p_enc: Encoder) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for m in (q_enc, p_enc) for p in m.parameters()])


def test_two_ranks_equal_one_process(tiny_model_dir_no_dropout, tmp_path):
    out = tmp_path / "grads.pt"
    worker = Path(__file__).with_name("dist_worker.py")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(tiny_model_dir_no_dropout), str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=True)

    q_enc, p_enc = towers(tiny_model_dir_no_dropout)
    q_ids, p_ids = batch()
    full_step(q_enc, p_enc, chunked(q_ids, N_Q, 0), chunked(p_ids, N_Q * PPQ, 0),
              partial(biencoder_nll, passages_per_question=PPQ, temperature=TEMPERATURE), lambda l: l.backward(),
              contextlib.nullcontext)
    reference = flat_grads(q_enc, p_enc)
    for name in ("cached", "uncached"):
        rel = float((got[name] - reference).norm() / reference.norm())
        assert rel <= 1e-10, (name, rel)
