"""Gradient-cache benchmarks on CPU with a small random BERT and real CMRC2018 texts (variable lengths).

  (a) step   - forward+backward CPU time per global batch: uncached vs cached with chunks padded to the batch's
               longest (as other implementations do) vs each chunk padded to its own longest member vs texts sorted
               by length before chunking (what train_dense_encoder.py does)
  (b) memory - peak RSS (getrusage ru_maxrss of a fresh subprocess per setting) at global batch 64 vs 512
  (c) st     - ours vs sentence-transformers CachedMultipleNegativesRankingLoss, same model/batch/mini-batch/lengths/
               negatives (run with a Python that has sentence-transformers; it is not a requirement of this project)

Usage: python bench/bench_grad_cache.py step|memory|st [--data DPR_JSON] [...]
Timings exclude tokenization (done before the clock, as a DataLoader worker would) and the optimizer step.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import BertConfig, BertModel, BertTokenizerFast  # noqa: E402

from dpr.models.encoder import Encoder, EncoderSettings  # noqa: E402
from dpr.training.data import chunked, passage_text, sorted_chunks  # noqa: E402
from dpr.training.grad_cache import cached_step, full_step  # noqa: E402
from dpr.training.loss import biencoder_nll  # noqa: E402
from dpr.utils.io import iter_json_array  # noqa: E402

DEFAULT_DATA = ROOT / "data/cmrc2018_retrieval/retrieval_train_data/dual_train.json"


def load_texts(path: Path, n: int, n_hard: int, vary: bool = False) -> tuple[list[str], list[str]]:
    """n questions and, per question, its positive + n_hard hard negatives (file order).

    vary: cut each passage to a random length (uniform between 10 characters and its full length), for a mix of
    short and long passages like DuReader's (CMRC2018 passages are all cut near 200 characters)."""
    import random

    rng = random.Random(0)
    qs, ps = [], []
    for _, _, item in iter_json_array(path):
        if len(qs) == n:
            break
        negs = item.get("hard_negative_ctxs", [])[:n_hard]
        if not item.get("positive_ctxs") or len(negs) < n_hard:
            continue
        qs.append(item["question"])
        ps.extend(passage_text(c) for c in [item["positive_ctxs"][0], *negs])
    if len(qs) < n:
        sys.exit(f"{path}: only {len(qs)} usable questions, need {n}")
    if vary:
        ps = [p[: rng.randint(10, max(10, len(p)))] for p in ps]
    return qs, ps


def build_model_dir(out: Path, texts: list[str], hidden: int, layers: int) -> Path:
    """A random BERT with a character vocabulary covering `texts`, saved as an HF dir."""
    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars])}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden, max_position_embeddings=512)
    Encoder(BertModel(cfg, add_pooling_layer=False), EncoderSettings(normalize=True)).save_pretrained(out, tok)
    return out


class Setup:
    def __init__(self, a: argparse.Namespace, batch: int):
        self.a = a
        qs, ps = load_texts(Path(a.data), batch, a.hard_negatives, a.vary_lengths)
        self.model_dir = Path(a.model_dir) if a.model_dir else build_model_dir(
            Path(tempfile.mkdtemp()) / "m", qs + ps, a.hidden, a.layers)
        self.tok = BertTokenizerFast.from_pretrained(self.model_dir)
        self.q_ids = self.tok(qs, max_length=a.q_len, truncation=True)["input_ids"]
        self.p_ids = self.tok(ps, max_length=a.p_len, truncation=True)["input_ids"]
        self.qs, self.ps = qs, ps
        self.encoder = Encoder.from_pretrained(self.model_dir)
        self.encoder.train()
        self.ppq = 1 + a.hard_negatives

    def chunks(self, mode: str) -> tuple[list, list]:
        a = self.a
        if mode == "uncached":
            return chunked(self.q_ids, len(self.q_ids), 0), chunked(self.p_ids, len(self.p_ids), 0)
        if mode == "cached":
            return chunked(self.q_ids, a.q_chunk, 0), chunked(self.p_ids, a.p_chunk, 0)
        # cached_batchpad: every chunk padded to the longest text of the whole batch
        def pad_all(ids, size):
            width = max(map(len, ids))
            return [{k: torch.nn.functional.pad(v, (0, width - v.shape[1])) for k, v in c.items()}
                    for c in chunked(ids, size, 0)]
        return pad_all(self.q_ids, a.q_chunk), pad_all(self.p_ids, a.p_chunk)

    def step(self, mode: str) -> float:
        """CPU seconds (process time: robust to other processes on a shared machine) of one forward+backward."""
        q_chunks, p_chunks = self.chunks(mode)
        q_order = p_order = None
        if mode == "cached_sorted":
            (q_chunks, q_order), (p_chunks, p_order) = (sorted_chunks(self.q_ids, self.a.q_chunk, 0),
                                                        sorted_chunks(self.p_ids, self.a.p_chunk, 0))
        loss_fn = partial(biencoder_nll, passages_per_question=self.ppq, temperature=0.05)
        fn = full_step if mode == "uncached" else cached_step
        self.encoder.zero_grad(set_to_none=True)
        t0 = time.process_time()
        fn(self.encoder, self.encoder, q_chunks, p_chunks, loss_fn, lambda loss: loss.backward(), contextlib.nullcontext,
           q_order, p_order)
        return time.process_time() - t0


def run_step(a: argparse.Namespace) -> None:
    s = Setup(a, a.batch)
    modes = ["uncached", "cached_batchpad", "cached", "cached_sorted"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    for m in modes:
        s.step(m)  # warm-up
    for _ in range(a.repeats):  # interleaved, so load from other processes hits every mode alike
        for m in modes:
            times[m].append(s.step(m))
    med = {m: statistics.median(v) for m, v in times.items()}
    pad = lambda ids, n: sum(max(map(len, ids[i:i + n])) * len(ids[i:i + n]) for i in range(0, len(ids), n))
    print(json.dumps({"bench": "step", "batch": a.batch, "passages": len(s.p_ids), "q_chunk": a.q_chunk,
                      "p_chunk": a.p_chunk, "q_len": a.q_len, "p_len": a.p_len, "hidden": a.hidden, "layers": a.layers,
                      "threads": torch.get_num_threads(), "repeats": a.repeats,
                      "median_s": {m: round(v, 3) for m, v in med.items()},
                      "ratio_vs_uncached": {m: round(med[m] / med["uncached"], 3) for m in modes},
                      "vary_lengths": a.vary_lengths, "timer": "process CPU time",
                      "passage_tokens_incl_padding": {"batch_padded": len(s.p_ids) * max(map(len, s.p_ids)),
                                                      "chunk_padded": pad(s.p_ids, a.p_chunk),
                                                      "sorted_chunk_padded": pad(sorted(s.p_ids, key=len, reverse=True), a.p_chunk),
                                                      "real": sum(map(len, s.p_ids))}}))


def run_memory_child(a: argparse.Namespace) -> None:
    s = Setup(a, a.batch)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dt = s.step(a.mode)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": a.mode, "batch": a.batch, "rss_before_step_mb": round(base / 1024),
                      "peak_rss_mb": round(peak / 1024), "step_peak_increase_mb": round((peak - base) / 1024),
                      "step_s": round(dt, 2)}))


def run_memory(a: argparse.Namespace) -> None:
    for mode in a.modes.split(","):
        for batch in map(int, a.batches.split(",")):
            passed = {k: v for k, v in vars(a).items() if k not in ("bench", "mode", "batch", "repeats", "modes", "batches") and v not in (None, False)}
            cmd = [sys.executable, __file__, "memory_child", "--mode", mode, "--batch", str(batch),
                   *sum(([f"--{k}"] if v is True else [f"--{k}", str(v)] for k, v in passed.items()), [])]
            out = subprocess.run(cmd, capture_output=True, text=True)
            print(out.stdout.strip() or out.stderr[-2000:], flush=True)


def run_st(a: argparse.Namespace) -> None:
    """Ours (shared tower, cosine, scale 20 = temperature 0.05) vs CachedMultipleNegativesRankingLoss."""
    from sentence_transformers import SentenceTransformer, __version__
    from sentence_transformers.losses import CachedMultipleNegativesRankingLoss

    s = Setup(a, a.batch)
    if a.hard_negatives != 1:
        sys.exit("st: the triplet comparison uses --hard_negatives 1")
    st = SentenceTransformer(str(s.model_dir), device="cpu")
    st.max_seq_length = a.p_len
    st.train()
    loss = CachedMultipleNegativesRankingLoss(st, scale=20.0, mini_batch_size=a.p_chunk)
    anchors = st.tokenize(s.qs)
    positives = st.tokenize(s.ps[0::2])
    negatives = st.tokenize(s.ps[1::2])
    labels = torch.zeros(len(s.qs))

    def st_step() -> float:
        st.zero_grad(set_to_none=True)
        t0 = time.process_time()
        loss([anchors, positives, negatives], labels).backward()
        return time.process_time() - t0

    a_q_chunk = a.q_chunk
    a.q_chunk = a.p_chunk  # same mini-batch size for questions and passages, as CachedMNRL uses one
    times: dict[str, list[float]] = {"ours_cached": [], "st_cached_mnrl": []}
    s.step("cached_sorted"), st_step()
    for _ in range(a.repeats):
        times["ours_cached"].append(s.step("cached_sorted"))
        times["st_cached_mnrl"].append(st_step())
    a.q_chunk = a_q_chunk
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"bench": "vs_sentence_transformers", "st_version": __version__, "batch": a.batch,
                      "mini_batch": a.p_chunk, "q_len": a.q_len, "p_len": a.p_len, "hard_negatives": 1,
                      "threads": torch.get_num_threads(), "median_s": {k: round(v, 3) for k, v in med.items()},
                      "st_over_ours": round(med["st_cached_mnrl"] / med["ours_cached"], 2),
                      "note": "st pads each input column to its longest text over the whole batch; "
                              "max_seq_length=p_len applies to questions too (their texts are far shorter)"}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", choices=["step", "memory", "memory_child", "st"])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model_dir", default=None, help="An HF encoder dir (default: a random BERT built here).")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hard_negatives", type=int, default=1)
    p.add_argument("--q_len", type=int, default=32)
    p.add_argument("--p_len", type=int, default=256)
    p.add_argument("--q_chunk", type=int, default=16)
    p.add_argument("--p_chunk", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--vary_lengths", action="store_true", help="Cut passages to random lengths (see load_texts).")
    p.add_argument("--mode", default="cached_sorted", help=argparse.SUPPRESS)
    p.add_argument("--modes", default="cached_sorted,uncached", help="memory: modes to measure")
    p.add_argument("--batches", default="64,512", help="memory: global batch sizes to measure")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    {"step": run_step, "memory": run_memory, "memory_child": run_memory_child, "st": run_st}[a.bench](a)


if __name__ == "__main__":
    main()
