"""Tokenizing time per 10k passages in dpr.encode's tokenizing threads, before and after issue 27: the tokenizer
(Rust, GIL released) and the Python work around it that holds the GIL: "before" (86798d5, kept here) is the
tokenizer's own call (a Python conversion per text) + the block's list sort + the per-row padding loop; "after" is
dpr.models.tokens.tokenize_ids (the Rust backend's ids) + dpr.encode's own _BatchRunner.prepare (numpy sort and
padding). Both must give identical tensors (checked every round).
Rounds alternate before/after; a threaded run (--threads threads, each tokenizing and preparing its own blocks, as
encode_stream's pool does) shows what GIL-holding Python costs when threads share the interpreter.

    python data/build_cmrc2018_retrieval.py --cmrc_dir ../shared/data/cmrc2018 --output_dir /tmp/cmrc
    python data/preprocess_dureader.py --input_dir /tmp/cmrc --output_dir /tmp/cmrc
    python bench/bench_tokenize.py --ctx_file /tmp/cmrc/passages.tsv

Prints one JSON line per round and a summary line (seconds per 10k passages, medians; CPU model and flags).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import queue
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dpr.data.formats import passage_input, read_passages_tsv  # noqa: E402
from dpr.encode import DEFAULT_BLOCK_SIZE, _BatchRunner, _Block  # noqa: E402
from dpr.models.encoder import load_tokenizer, stored_settings  # noqa: E402
from dpr.models.pretrained import resolve_model_path  # noqa: E402
from dpr.models.tokens import padding_of, tokenize_ids  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def cpu_info() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"machine": platform.machine()}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    return {"cpu": model, "cpu_flags": [f for f in FLAGS if f in flags], "cores": os.cpu_count(),
            "torch": torch.__version__}


def pad_batch_before(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """dpr.models.tokens.pad_batch as of 86798d5: a Python loop over rows."""
    width = max(len(s) for s in seqs)
    ids_t = torch.full((len(seqs), width), pad_id, dtype=torch.int64)
    mask_t = torch.zeros((len(seqs), width), dtype=torch.int64)
    ids, mask = ids_t.numpy(), mask_t.numpy()
    for row, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = seq
        mask[row, cols] = 1
    return ids_t, mask_t


def prepare_before(seqs: list[list[int]], batch_size: int, pad_id: int, left: bool) -> _Block:
    """_BatchRunner.prepare as of 86798d5."""
    order = np.argsort([-len(x) for x in seqs], kind="stable")
    seqs = [seqs[i] for i in order]
    return _Block(order, seqs, {s: pad_batch_before(seqs[s : s + batch_size], pad_id, left)
                                for s in range(0, len(seqs), batch_size)})


def tokenize_before(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """dpr.models.tokens.tokenize_ids as of 86798d5: the tokenizer's own call."""
    return tokenizer(texts, max_length=max_length, truncation=True, add_special_tokens=True,
                     return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def same(a: _Block, b: _Block) -> bool:
    return (np.array_equal(a.order, b.order) and a.batches.keys() == b.batches.keys()
            and all(torch.equal(x, y) for k in a.batches for x, y in zip(a.batches[k], b.batches[k])))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="multilingual-e5-small", help="Registry name or model directory.")
    p.add_argument("--ctx_file", required=True, help="passages.tsv (id, text, title).")
    p.add_argument("--n", type=int, default=10_000, help="Passages (the first n of --ctx_file).")
    p.add_argument("--max_length", type=int, default=384)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--block_size", type=int, default=DEFAULT_BLOCK_SIZE)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    path = resolve_model_path(a.model)
    tok = load_tokenizer(path)
    settings = stored_settings(path)
    texts = settings.prepare([passage_input(t, title) for _, t, title in islice(read_passages_tsv(a.ctx_file), a.n)],
                             "passage")
    n = len(texts)
    blocks = [texts[s : s + a.block_size] for s in range(0, n, a.block_size)]
    pad_id, left = padding_of(tok)
    runner = _BatchRunner(None, tok, a.batch_size, "cpu", None, None)  # only its prepare runs (no model)
    per10k = 10_000 / n
    rows = []

    def tokenize(t, block: list[str], after: bool) -> list[list[int]]:
        return tokenize_ids(t, block, a.max_length) if after else tokenize_before(t, block, a.max_length)

    def prepare(seqs: list[list[int]], after: bool) -> _Block:
        return runner.prepare(seqs) if after else prepare_before(seqs, a.batch_size, pad_id, left)

    free: queue.Queue = queue.Queue()  # one tokenizer per thread at a time, as dpr.encode._Tokenizers gives
    for _ in range(a.threads):
        free.put(copy.deepcopy(tok))

    def work(block: list[str], after: bool) -> _Block:
        t = free.get()
        try:
            return prepare(tokenize(t, block, after), after)
        finally:
            free.put(t)

    with ThreadPoolExecutor(a.threads) as pool:
        for r in range(a.rounds):
            times = dict.fromkeys(("tokenizer_before_s", "prepare_before_s", "tokenizer_after_s", "prepare_after_s"),
                                  0.0)
            for block in blocks:
                made = {}
                for after in ((False, True) if r % 2 == 0 else (True, False)):
                    side = "after" if after else "before"
                    t0 = time.perf_counter()
                    seqs = tokenize(tok, block, after)
                    t1 = time.perf_counter()
                    made[side] = prepare(seqs, after)
                    t2 = time.perf_counter()
                    times[f"tokenizer_{side}_s"] += (t1 - t0) * per10k
                    times[f"prepare_{side}_s"] += (t2 - t1) * per10k
                if not same(made["before"], made["after"]):
                    raise SystemExit("bench_tokenize: before and after give different tensors")
            for after in ((False, True) if r % 2 == 0 else (True, False)):
                t0 = time.perf_counter()
                list(pool.map(lambda b: work(b, after), blocks))
                times[f"threads{a.threads}_{'after' if after else 'before'}_s"] = (time.perf_counter() - t0) * per10k
            row = {"round": r, **times}
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0] if k != "round"}
    before = med["tokenizer_before_s"] + med["prepare_before_s"]
    after = med["tokenizer_after_s"] + med["prepare_after_s"]
    summary = {"passages": n, "per": "10k passages, seconds (medians)", "model": a.model, "max_length": a.max_length,
               "batch_size": a.batch_size, "block_size": a.block_size, "rounds": a.rounds,
               **{k: round(v, 4) for k, v in med.items()},
               "one_thread_before_s": round(before, 4), "one_thread_after_s": round(after, 4),
               "after_over_before": round(after / before, 3),
               "threads_after_over_before": round(med[f"threads{a.threads}_after_s"]
                                                  / med[f"threads{a.threads}_before_s"], 3), **cpu_info()}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
