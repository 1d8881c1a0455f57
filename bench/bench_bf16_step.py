"""fp32 vs bf16 autocast on this CPU, side by side in one run: where a training step's time goes.

For each precision, interleaved repeat by repeat (so load from other processes hits both alike), wall time of:
  raw_fwd_bwd      every chunk: encoder forward (pooled) + backward of a dummy loss; no cache, no optimizer
  raw_pure_bf16    the same with the weights themselves in bf16 (no autocast, no casts), bf16 rows only
  data             BatchBuilder: sampling + tokenization + sorted chunking of one global batch
  pass1            gradient cache pass 1: every chunk encoded without a graph
  loss             the in-batch loss and its backward on the cached representations
  pass2            gradient cache pass 2: every chunk re-encoded with a graph and backpropagated
  clip / optim / zero   clip_grad_norm_, (fused) AdamW step, zero_grad
  step             pass1 + loss + pass2 + clip + optim + zero (what Trainer.train_step does), and with data
  cached_step      dpr.training.grad_cache.cached_step called as a whole (a check on the phase sum)
and the bf16 speed-up (fp32 time / bf16 time) per phase. --profile adds the top ops of one cached step per precision.
--variants adds columns that say where bf16's time goes (step and raw only):
  bf16_res         bf16 with the residual stream in bf16 too (the embeddings' output cast), not fp32 between layers
  fp32_flash / bf16_flash   attention dropout 0 (train_dense_encoder.py --attention_dropout 0): torch's fused CPU
                   attention kernel instead of the composite "math" one that any attention dropout forces

Usage: python bench/bench_bf16_step.py [--model multilingual-e5-small] [--data dual_train.json] [--questions 32]
       [--freeze_embeddings] [--repeats 3] [--profile]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dpr.models.loading import load_encoder_pair  # noqa: E402
from dpr.training.data import BatchBuilder, BiEncoderData, SamplingConfig, unpack_chunks  # noqa: E402
from dpr.training.grad_cache import _unsort, cached_step, encode_no_grad, replay_backward  # noqa: E402
from dpr.training.loss import biencoder_nll  # noqa: E402
from dpr.training.trainer import build_optimizer, set_attention_dropout, unique_parameters  # noqa: E402
from dpr.utils.precision import autocast  # noqa: E402

DEFAULT_DATA = ROOT / "data/cmrc2018_retrieval/retrieval_train_data/dual_train.json"
# --variants: column -> (autocast dtype, the fp32 column its speed-up is taken against)
VARIANTS = {"bf16_res": (torch.bfloat16, "fp32"), "fp32_flash": (None, "fp32"),
            "bf16_flash": (torch.bfloat16, "fp32_flash")}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def cpu_info() -> dict:
    """Model name and the flags that decide bf16 speed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"machine": platform.machine()}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    return {"model": model, "flags": [f for f in FLAGS if f in flags], "torch": torch.__version__,
            "threads": torch.get_num_threads(), "mkldnn_bf16": torch.backends.mkldnn.is_available()}


def _unpack(batch: dict) -> dict:
    """The builder's packed sides as chunk lists (what the Trainer does in the main process)."""
    return {**batch, "q_chunks": unpack_chunks(batch["q"]), "p_chunks": unpack_chunks(batch["p"])}


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        q, p, self.tokenizer = load_encoder_pair(a.model)
        self.encoder = q  # one shared tower, as the demo and the recipe train
        self.encoder.settings.normalize = True
        if a.freeze_embeddings:
            self.encoder.model.get_input_embeddings().weight.requires_grad_(False)
        self.encoder.train()
        self.data = BiEncoderData(a.data, a.questions)
        self.sampling = SamplingConfig(a.hard_negatives, 0, True, 0)
        self.builder = BatchBuilder(self.data, self.tokenizer, self.encoder.settings, self.sampling, a.q_len,
                                    a.p_len, a.q_chunk, a.ctx_chunk)
        self.indices = np.arange(min(a.questions, len(self.data)))
        self.batch = _unpack(self.builder(self.indices, 0))
        self.params = unique_parameters(self.encoder)
        self.optimizer = build_optimizer([self.encoder], 1e-7, 0.01, 1e-8)
        self.loss_fn = partial(biencoder_nll, passages_per_question=self.sampling.passages_per_question,
                               temperature=0.01)
        self.pure_bf16 = None

    @contextlib.contextmanager
    def variant(self, name: str):
        """The model as column `name` runs it (see the module docstring); restored afterwards."""
        hooks, attention_p = [], None
        if name.endswith("_res"):
            hooks.append(self.encoder.model.embeddings.register_forward_hook(
                lambda m, i, o: o.to(torch.get_autocast_dtype("cpu")) if torch.is_autocast_enabled("cpu") else o))
        if name.endswith("_flash"):  # what train_dense_encoder.py --attention_dropout 0 does
            attention_p = self.encoder.model.config.attention_probs_dropout_prob
            set_attention_dropout(self.encoder, 0.0)
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            if attention_p is not None:
                set_attention_dropout(self.encoder, attention_p)

    def amp(self, dtype):
        return partial(autocast, "cpu", dtype)

    def raw(self, dtype, encoder=None) -> float:
        enc = encoder or self.encoder
        enc.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        for chunk in self.batch["q_chunks"] + self.batch["p_chunks"]:
            with self.amp(dtype)():
                rep = enc(**chunk)
            rep.float().pow(2).sum().backward()
        return time.perf_counter() - t0

    def phases(self, dtype) -> dict:
        """One training step, phase by phase (the body of cached_step + the optimizer part of Trainer.train_step)."""
        t = {}
        t0 = time.perf_counter()
        batch = _unpack(self.builder(self.indices, 1))
        t["data"] = time.perf_counter() - t0
        amp = self.amp(dtype)
        enc = self.encoder
        t0 = time.perf_counter()
        q_reps, q_states = encode_no_grad(enc, batch["q_chunks"], amp)
        p_reps, p_states = encode_no_grad(enc, batch["p_chunks"], amp)
        t["pass1"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        q = _unsort(q_reps, batch["q_order"]).detach().requires_grad_()
        p = _unsort(p_reps, batch["p_order"]).detach().requires_grad_()
        loss, _ = self.loss_fn(q, p)
        loss.backward()
        q_grad = q.grad if batch["q_order"] is None else q.grad[batch["q_order"]]
        p_grad = p.grad if batch["p_order"] is None else p.grad[batch["p_order"]]
        t["loss"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        replay_backward(enc, batch["q_chunks"], q_states, q_grad, amp)
        replay_backward(enc, batch["p_chunks"], p_states, p_grad, amp)
        t["pass2"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, 2.0)
        t["clip"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.optimizer.step()
        t["optim"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        t["zero"] = time.perf_counter() - t0
        t["step"] = sum(t[k] for k in ("pass1", "loss", "pass2", "clip", "optim", "zero"))
        t["step+data"] = t["step"] + t["data"]
        return t

    def whole(self, dtype) -> float:
        b = self.batch
        self.encoder.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        cached_step(self.encoder, self.encoder, b["q_chunks"], b["p_chunks"], self.loss_fn, lambda loss: loss.backward(),
                    self.amp(dtype), b["q_order"], b["p_order"])
        return time.perf_counter() - t0

    def profile(self, dtype, top: int) -> list[dict]:
        from torch.profiler import ProfilerActivity, profile

        b = self.batch
        self.encoder.zero_grad(set_to_none=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            cached_step(self.encoder, self.encoder, b["q_chunks"], b["p_chunks"], self.loss_fn,
                        lambda loss: loss.backward(), self.amp(dtype), b["q_order"], b["p_order"])
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
        return [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count} for e in events]


def median_table(runs: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    return {prec: {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]} for prec, rows in runs.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="multilingual-e5-small", help="A model name, HF dir or checkpoint.")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="A DPR training file (with hard negatives).")
    p.add_argument("--questions", type=int, default=32, help="Questions in the global batch.")
    p.add_argument("--hard_negatives", type=int, default=1)
    p.add_argument("--q_len", type=int, default=32)
    p.add_argument("--p_len", type=int, default=128)
    p.add_argument("--q_chunk", type=int, default=32)
    p.add_argument("--ctx_chunk", type=int, default=32)
    p.add_argument("--freeze_embeddings", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    p.add_argument("--no_pure_bf16", action="store_true", help="Skip the bf16-weights reference (saves memory).")
    p.add_argument("--profile", type=int, default=0, metavar="TOP", help="Also list the TOP ops of one step.")
    p.add_argument("--variants", action="store_true", help="Also bf16_res, fp32_flash and bf16_flash (docstring).")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    b = Bench(a)
    precisions = {"fp32": None, "bf16": torch.bfloat16}
    pure = None if a.no_pure_bf16 else copy.deepcopy(b.encoder).to(torch.bfloat16)
    for dtype in precisions.values():  # warm-up (allocator, oneDNN primitives)
        b.phases(dtype)
        b.raw(dtype)
    variants = VARIANTS if a.variants else {}
    for name, (dtype, _) in variants.items():  # warm-up
        with b.variant(name):
            b.phases(dtype)
    runs: dict[str, list[dict]] = {k: [] for k in (*precisions, *variants)}
    for _ in range(a.repeats):
        for name, dtype in precisions.items():
            row = b.phases(dtype)
            row["cached_step"] = b.whole(dtype)
            row["raw_fwd_bwd"] = b.raw(dtype)
            if pure is not None:
                row["raw_pure_bf16"] = b.raw(None, pure) if name == "bf16" else row["raw_fwd_bwd"]
            runs[name].append(row)
        for name, (dtype, _) in variants.items():
            with b.variant(name):
                row = b.phases(dtype)
                row["raw_fwd_bwd"] = b.raw(dtype)
            runs[name].append(row)
    med = median_table(runs)
    report = {"bench": "bf16_step", "cpu": cpu_info(), "model": a.model, "questions": a.questions,
              "passages": sum(c["input_ids"].shape[0] for c in b.batch["p_chunks"]),
              "q_len": a.q_len, "p_len": a.p_len, "chunks": [a.q_chunk, a.ctx_chunk],
              "freeze_embeddings": a.freeze_embeddings, "trainable_params": sum(x.numel() for x in b.params),
              "repeats": a.repeats, "timer": "wall (perf_counter), median",
              "median_s": med, "speedup_fp32_over_bf16": {k: round(med["fp32"][k] / max(med["bf16"][k], 1e-9), 2)
                                                          for k in med["fp32"]}}
    for name, (_, base) in variants.items():
        report[f"speedup_{base}_over_{name}"] = {k: round(med[base][k] / max(v, 1e-9), 2) for k, v in med[name].items()}
    if a.profile:
        report["profile_top_ops"] = {name: b.profile(dtype, a.profile) for name, dtype in precisions.items()}
        for name, (dtype, _) in variants.items():
            with b.variant(name):
                report["profile_top_ops"][name] = b.profile(dtype, a.profile)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
