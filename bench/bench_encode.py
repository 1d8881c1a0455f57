"""Passages/s of our encoding path (dpr.encode.encode_stream, what generate_dense_embeddings.py runs) against
sentence-transformers `encode` on the same model directory, texts, max length, batch size and threads.

    python bench/bench_encode.py --n 1024 --max_length 256 --batch_size 32 --threads 2

Needs `pip install sentence-transformers` (benchmark only). Prints one JSON line per run and a summary; runs
alternate (ours, theirs, ours, ...) so that load from other processes hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dpr.data.formats import (
    passage_input,  # noqa: E402
    read_passages_tsv,  # noqa: E402
)
from dpr.encode import encode_texts  # noqa: E402
from dpr.models.encoder import Encoder, load_tokenizer  # noqa: E402
from dpr.models.pretrained import resolve_model_path  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="multilingual-e5-small")
    p.add_argument("--ctx_file", default="data/cmrc2018_retrieval/passages.tsv")
    p.add_argument("--n", type=int, default=1024, help="Passages (the first n of --ctx_file).")
    p.add_argument("--max_length", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = resolve_model_path(args.model)
    texts = [passage_input(t, title) for _, t, title in islice(read_passages_tsv(args.ctx_file), args.n)]

    from sentence_transformers import SentenceTransformer

    ours_enc, tok = Encoder.from_pretrained(model_dir).eval(), load_tokenizer(model_dir)
    st = SentenceTransformer(model_dir, device="cpu")
    st.max_seq_length = args.max_length

    def ours() -> np.ndarray:
        return encode_texts(ours_enc, tok, texts, "passage", args.max_length, args.batch_size)

    def theirs() -> np.ndarray:
        return st.encode(texts, prompt=ours_enc.settings.passage_prefix, batch_size=args.batch_size,
                         convert_to_numpy=True, show_progress_bar=False)

    n_tokens = sum(min(len(x), args.max_length) for x in tok([ours_enc.settings.passage_prefix + t for t in texts])["input_ids"])
    ours_enc.model.to("cpu")
    encode_texts(ours_enc, tok, texts[:8], "passage", args.max_length, 8)  # warm-up
    st.encode(texts[:8], batch_size=8, show_progress_bar=False)
    rates: dict[str, list[float]] = {"dpr.encode": [], "sentence-transformers": []}
    outputs = {}
    for r in range(args.repeats):
        for name, fn in (("dpr.encode", ours), ("sentence-transformers", theirs)):
            t0 = time.perf_counter()
            outputs[name] = fn()
            dt = time.perf_counter() - t0
            rates[name].append(len(texts) / dt)
            print(json.dumps({"run": r, "impl": name, "seconds": round(dt, 2), "passages_per_s": round(len(texts) / dt, 2)}))
    a, b = outputs["dpr.encode"], outputs["sentence-transformers"]
    cos = float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
    summary = {"model": args.model, "passages": len(texts), "mean_tokens": round(n_tokens / len(texts), 1),
               "max_length": args.max_length, "batch_size": args.batch_size, "threads": args.threads,
               "best_passages_per_s": {k: round(max(v), 2) for k, v in rates.items()},
               "speedup": round(max(rates["dpr.encode"]) / max(rates["sentence-transformers"]), 3),
               "mean_cosine_ours_vs_theirs": round(cos, 6), "loadavg_1m": os.getloadavg()[0]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
