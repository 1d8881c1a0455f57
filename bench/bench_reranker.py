"""Reranker cost on this machine: training pairs/s (RerankerTrainer.train_step: forward, listwise loss, backward,
clip, AdamW) and scoring pairs/s (eval forward of length-sorted batches), per precision and attention dropout, side by
side in one run (repeats interleaved, so load from other processes hits every variant alike).

Variants: fp32 (the model's attention dropout), fp32_ad0 (--attention_dropout 0: torch's fused attention kernel),
bf16 / bf16_ad0 (bf16 autocast forced even where `--precision auto` would not pick it: on a CPU without AMX /
AVX512-BF16 bf16 is emulated and slow; the numbers say how slow). Pairs come from CMRC2018 train (a question with its
paragraph and other paragraphs of the file as negatives) cut at --max_seq_length, or from --data (a DPR JSON file).

Usage: python bench/bench_reranker.py [--model multilingual-e5-small] [--max_seq_length 192] [--group_size 8]
       [--questions 2] [--repeats 3] [--variants fp32,fp32_ad0,bf16,bf16_ad0]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.bench_bf16_step import cpu_info  # noqa: E402
from dpr.models.cross_encoder import CrossEncoderSettings, new_cross_encoder, pair_ids  # noqa: E402
from dpr.training.reranker_config import RerankerConfig  # noqa: E402
from dpr.training.reranker_data import RerankData  # noqa: E402
from dpr.training.reranker_trainer import RerankerTrainer  # noqa: E402
from dpr.training.trainer import DistInfo, set_attention_dropout  # noqa: E402

VARIANTS = {"fp32": (None, None), "fp32_ad0": (None, 0.0), "bf16": (torch.bfloat16, None),
            "bf16_ad0": (torch.bfloat16, 0.0)}


def cmrc_dpr_file(out: Path, n_questions: int, n_negatives: int) -> Path:
    """A DPR JSON file from CMRC2018 train: each paragraph's first question, its paragraph as the positive, the
    next paragraphs of the file as hard negatives."""
    src = Path(os.environ.get("CMRC2018_DIR") or ROOT.parent / "shared/data/cmrc2018") / "cmrc2018_train.json"
    paragraphs = [p for a in json.loads(src.read_text(encoding="utf-8"))["data"] for p in a["paragraphs"]]
    items = []
    for i in range(n_questions):
        p = paragraphs[i]
        items.append({"question": p["qas"][0]["question"],
                      "positive_ctxs": [{"passage_id": str(i), "text": p["context"], "title": ""}],
                      "hard_negative_ctxs": [{"passage_id": str(j), "text": paragraphs[j]["context"], "title": ""}
                                             for j in range(i + 1, i + 1 + n_negatives)]})
    out.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--data", default=None, help="DPR JSON file (default: built from CMRC2018 train)")
    parser.add_argument("--max_seq_length", type=int, default=192)
    parser.add_argument("--q_sequence_length", type=int, default=32)
    parser.add_argument("--group_size", type=int, default=8)
    parser.add_argument("--questions", type=int, default=2, help="questions per training step")
    parser.add_argument("--score_batch", type=int, default=64, help="pairs per scoring batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="fp32,fp32_ad0,bf16,bf16_ad0")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench_reranker."))
    data_file = Path(args.data) if args.data else cmrc_dpr_file(tmp / "train.json", args.questions * (args.repeats + 1),
                                                                args.group_size)
    data = RerankData(data_file)
    settings = CrossEncoderSettings(args.max_seq_length, args.q_sequence_length)
    trainers = {}
    for name in variants:
        dtype, dropout = VARIANTS[name]
        torch.manual_seed(0)
        ce = new_cross_encoder(args.model, settings)
        if dropout is not None:
            set_attention_dropout(ce, dropout)
        config = RerankerConfig(train_file=str(data_file), output_dir=str(tmp / name), batch_size=args.questions,
                                group_size=args.group_size, ctx_chunk_size=args.questions * args.group_size,
                                precision="fp32", warmup_steps=0, dev_batch_size=args.score_batch)
        t = RerankerTrainer(config, ce, data, None, torch.device("cpu"), DistInfo())
        t.amp_dtype = dtype  # forced, whatever --precision auto would pick here
        t.model.train()
        trainers[name] = t
    first = trainers[variants[0]]
    batches = first._batches(0)
    n_pairs = args.questions * args.group_size
    questions = [data.questions[int(i)] for i in batches[0] for _ in range(args.group_size)]
    passages = [data.passages[j] for g in first.groups(batches[0], 0) for j in g]  # scored: batch 0's pairs
    tokens = [len(x) for x in pair_ids(first.ce.tokenizer, settings, questions, passages)[0]]
    train_s = {n: [] for n in variants}
    score_s = {n: [] for n in variants}
    for r in range(args.repeats + 1):  # repeat 0 warms up (allocator, kernels) and is not counted
        for name in variants:
            t = trainers[name]
            t0 = time.perf_counter()
            t.train_step(batches[(r + 1) % len(batches)], 0)
            dt = time.perf_counter() - t0
            t0 = time.perf_counter()
            t.score(questions, passages)
            ds = time.perf_counter() - t0
            if r:
                train_s[name].append(dt)
                score_s[name].append(ds)
    report = {"bench": "reranker", "model": args.model, "max_seq_length": args.max_seq_length,
              "mean_pair_tokens": round(sum(tokens) / len(tokens), 1), "group_size": args.group_size,
              "pairs_per_step": n_pairs, "repeats": args.repeats, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu": cpu_info(),
              "train_pairs_per_s": {n: round(n_pairs / statistics.median(v), 2) for n, v in train_s.items()},
              "score_pairs_per_s": {n: round(len(passages) / statistics.median(v), 2) for n, v in score_s.items()},
              "train_step_s_median": {n: round(statistics.median(v), 3) for n, v in train_s.items()}}
    print(json.dumps(report, ensure_ascii=False))
    return report


if __name__ == "__main__":
    main()
