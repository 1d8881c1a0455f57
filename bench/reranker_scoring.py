"""Reranker scoring speed on CPU (or the GPU when present): pairs/s of dpr.retrieval.reranker.Reranker over real
CMRC2018 pairs (each dev question against the 200-character passages of its own paragraph, cut as the demo's corpus
is), for each precision and batch size, side by side in one process (alternating rounds, so the machine's load hits
all alike). The model: --reranker DIR, else a new one-logit head on --model (speed does not depend on the head's
training). Prints the CPU flags, one JSON line per setting (median and fastest round) and the pairs' token lengths.

    python bench/reranker_scoring.py --pairs 256 --rounds 3                      # e5-small + new head, fp32 / bf16
    python bench/reranker_scoring.py --reranker outputs/reranker --max_length 256
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cmrc_pairs(path: Path, n: int) -> list[tuple[str, str]]:
    """(question, passage) pairs: each question with every 200-character passage of its paragraph, the first n."""
    from dpr.data.cmrc import _iter_paragraphs, split_paragraph
    from dpr.data.formats import passage_input

    pairs = []
    for title, para in _iter_paragraphs(path):
        context = para["context"]
        passages = [passage_input(context[a:b], title) for a, b in split_paragraph(context, 200)]
        for qa in para.get("qas", []):
            pairs += [(qa["question"], p) for p in passages]
            if len(pairs) >= n:
                return pairs[:n]
    return pairs


def main(argv: list[str] | None = None) -> list[dict]:
    import numpy as np
    import torch

    from dpr.data.cmrc import default_cmrc_dir
    from dpr.models.cross_encoder import CrossEncoderSettings, load_cross_encoder, new_cross_encoder
    from dpr.retrieval.reranker import Reranker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reranker", help="A reranker directory (default: a new head on --model).")
    ap.add_argument("--model", default="multilingual-e5-small", help="The encoder under a new head.")
    ap.add_argument("--max_length", type=int, default=256, help="Pair cap for the new head (a reranker: its own).")
    ap.add_argument("--q_max_length", type=int, default=32)
    ap.add_argument("--cmrc_file", help="SQuAD-style CMRC file (default: the offline cmrc2018_dev.json).")
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch_sizes", default="32,128")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cmrc = Path(a.cmrc_file) if a.cmrc_file else default_cmrc_dir(ROOT) / "cmrc2018_dev.json"
    pairs = cmrc_pairs(cmrc, a.pairs)
    ce = (load_cross_encoder(a.reranker) if a.reranker else
          new_cross_encoder(a.model, CrossEncoderSettings(max_length=a.max_length, q_max_length=a.q_max_length)))
    flags = ""
    try:
        flags = " ".join(sorted({f for f in Path("/proc/cpuinfo").read_text().split() if f.startswith(("avx", "amx"))}))
    except OSError:
        pass
    from dpr.models.cross_encoder import pair_ids

    lengths = [len(x) for x in pair_ids(ce.tokenizer, ce.settings, [q for q, _ in pairs], [p for _, p in pairs])[0]]
    print(json.dumps({"cpu_flags": flags, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "model": a.reranker or a.model, "pairs": len(pairs), "settings": ce.settings.__dict__,
                      "pair_tokens_mean": round(float(np.mean(lengths)), 1), "pair_tokens_max": max(lengths)}),
          flush=True)
    settings = [(p, int(b)) for p in a.precisions.split(",") for b in a.batch_sizes.split(",")]
    rerankers = {s: Reranker(ce, a.reranker or a.model, batch_size=s[1], precision=s[0]) for s in settings}
    times: dict = {s: [] for s in settings}
    qs, ps = [q for q, _ in pairs], [p for _, p in pairs]
    for s in settings:  # warm-up
        rerankers[s].score_pairs(qs[: s[1]], ps[: s[1]])
    for _ in range(a.rounds):
        for s in settings:
            t0 = time.perf_counter()
            rerankers[s].score_pairs(qs, ps)
            times[s].append(time.perf_counter() - t0)
    out = []
    for (precision, batch), t in times.items():
        amp = rerankers[(precision, batch)].amp_dtype
        row = {"precision": precision, "amp": str(amp), "batch": batch, "device": str(rerankers[(precision, batch)].device),
               "pairs_per_s_median": round(len(pairs) / statistics.median(t), 1),
               "pairs_per_s_best": round(len(pairs) / min(t), 1)}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    main()
