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

from dpr.models.encoder import Encoder
from dpr.training.data import chunked
from dpr.training.grad_cache import full_step
from dpr.training.loss import biencoder_nll
from tests.training.builders import make_tokenizer, random_text

PPQ = 3
N_Q = 5  # splits 3 + 2 over two ranks: unequal shares are gathered too
TEMPERATURE = 0.1
# question 0's positive (rank 0) reappears as question 4's negative (rank 1): masked across ranks, both ways
MASK = torch.tensor([[0, 4 * PPQ + 2], [4, 0]])


def batch() -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(3)
    tok = make_tokenizer()
    q_ids = tok([random_text(rng, 2, 12) for _ in range(N_Q)])["input_ids"]
    p_ids = tok([random_text(rng, 3, 40) for _ in range(N_Q * PPQ)])["input_ids"]
    p_ids[4 * PPQ + 2] = p_ids[0]
    return q_ids, p_ids


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
              partial(biencoder_nll, passages_per_question=PPQ, temperature=TEMPERATURE, masked=MASK), lambda loss: loss.backward(),
              contextlib.nullcontext)
    reference = flat_grads(q_enc, p_enc)
    for name in ("cached", "uncached"):
        rel = float((got[name] - reference).norm() / reference.norm())
        assert rel <= 1e-10, (name, rel)


def test_script_under_torchrun_matches_one_process(tiny_model_dir_no_dropout, tiny_train_file, tmp_path):
    """The whole script (process group, broadcast, gathered loss, summed gradients, rank-0 checkpoints) on 2 ranks
    ends with the weights of the 1-process run on the same global batches."""
    from safetensors.torch import load_file

    script = Path(__file__).resolve().parents[2] / "train_dense_encoder.py"
    common = ["--pretrained_model_cfg", str(tiny_model_dir_no_dropout), "--train_file", str(tiny_train_file),
              "--batch_size", "10", "--num_train_epochs", "1", "--grad_cache", "--q_chunk_size", "2",
              "--ctx_chunk_size", "3", "--hard_negatives", "1", "--other_negatives", "1", "--learning_rate", "1e-3",
              "--warmup_steps", "0", "--num_workers", "0", "--no_progress", "--seed", "3", "--precision", "fp32",
              # a large Adam eps keeps updates proportional to small gradients: with the default, gradients that are
              # zero in exact arithmetic (e.g. the last LayerNorm bias of the passage tower under in-batch softmax)
              # are float noise that Adam blows up to +-lr, differently on each run
              "--adam_eps", "1e-2"]
    runs = {"two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
            "one": [sys.executable, str(script)]}
    weights = {}
    for name, cmd in runs.items():
        proc = subprocess.run(cmd + common + ["--output_dir", str(tmp_path / name)], capture_output=True, text=True,
                              timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        # 24 questions in global batches of 10: 10, 10, 4 -> dpr_biencoder.0.3
        weights[name] = load_file(str(tmp_path / name / "dpr_biencoder.0.3.passage_encoder" / "model.safetensors"))
    start = load_file(str(tiny_model_dir_no_dropout / "model.safetensors"))
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(weights["one"][key], start[key])
    for k in weights["one"]:
        assert torch.allclose(weights["two"][k], weights["one"][k], rtol=0, atol=1e-6), k
