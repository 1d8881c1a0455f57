"""Hybrid retrieval's alpha, swept offline: MRR@10 / recall@1 / recall@50 of BM25 alone, dense alone and the fused
ranking at each alpha, recomputed from ONE hybrid rerank file (which carries both raw scores of every passage).

Write the rerank file with the full union of both lists (--n_docs at least twice --hybrid_depth), e.g.
  python dense_retriever.py --model_file multilingual-e5-small --qa_file heldout.json --ctx_file passages.tsv \\
    --encoded_ctx_file 'emb/emb_shard*.npy' --out_file sweep/res.json --hybrid_alpha 0.5 --n_docs 200
  python bench/hybrid_alpha_sweep.py --rerank_file sweep/res.rerank.jsonl --qa_file heldout.json
Choose alpha on questions you do not report (held-out train questions), never on the dev or test questions.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.data.formats import read_questions  # noqa: E402
from dpr.eval.dureader import evaluate  # noqa: E402
from dpr.retrieval.hybrid import FUSIONS, FusionConfig, fuse  # noqa: E402
from dpr.utils.io import write_json  # noqa: E402

KEYS = ("MRR@10", "recall@1", "recall@50")


def side_lists(rerank_file: str) -> dict[str, tuple[list[tuple[str, float]], list[tuple[str, float]]]]:
    """{qid: (dense list, BM25 list)}, each (pid, raw score) best first, rebuilt from a hybrid rerank file."""
    out = {}
    with open(rerank_file, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            sides = []
            for key in ("dense_score", "bm25_score"):
                if any(key not in p for p in r["passages"]):
                    sys.exit(f"error: {rerank_file}: no {key}: not written by dense_retriever.py --hybrid_alpha")
                hits = [(p["passage_id"], p[key]) for p in r["passages"] if p[key] is not None]
                sides.append(sorted(hits, key=lambda h: -h[1]))
            out[r["question_id"]] = (sides[0], sides[1])
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rerank_file", required=True)
    p.add_argument("--qa_file", required=True, help="The same questions, with their gold passages.")
    p.add_argument("--alphas", type=float, nargs="+", default=[round(0.1 * i, 1) for i in range(11)])
    p.add_argument("--fusion", choices=FUSIONS, default="convex")
    p.add_argument("--depth", type=int, default=100, help=(
        "Passages of each side fused: the run's --hybrid_depth (a BM25 list shorter than it holds every match and "
        "is scaled against 0), or less."))
    p.add_argument("--json_out", default=None, help="Also write the rows and the best alpha as JSON here.")
    args = p.parse_args(argv)
    reference = {qid: set(gold) for qid, _, gold in read_questions(args.qa_file) if gold}
    lists = side_lists(args.rerank_file)
    if set(lists) != set(reference):
        sys.exit(f"error: {args.rerank_file} and {args.qa_file} hold different questions")
    rows = [{"ranking": "BM25", **evaluate(reference, {q: [p for p, _ in b] for q, (_, b) in lists.items()})},
            {"ranking": "dense", **evaluate(reference, {q: [p for p, _ in d] for q, (d, _) in lists.items()})}]
    for alpha in args.alphas:
        config = FusionConfig(alpha=alpha, method=args.fusion, depth=args.depth)
        ranked = {q: [h.pid for h in fuse(d, b, config)] for q, (d, b) in lists.items()}
        rows.append({"ranking": f"{args.fusion} alpha {alpha:.2f}", **evaluate(reference, ranked)})
    exhaustive = sum(len(b) < args.depth for _, b in lists.values())
    print(f"{len(reference)} questions, {args.rerank_file}; {exhaustive} with a BM25 list shorter than --depth "
          f"{args.depth} (it holds every match: scaled against 0, see dpr/retrieval/hybrid.py)")
    print(f"| {'ranking':<20} | " + " | ".join(KEYS) + " |")
    for r in rows:
        print(f"| {r['ranking']:<20} | " + " | ".join(f"{r[k]:.4f}".ljust(len(k)) for k in KEYS) + " |")
    best_alpha, best = max(zip(args.alphas, rows[2:]), key=lambda pair: pair[1]["MRR@10"])
    print(f"best MRR@10: {best['ranking']} ({best['MRR@10']:.4f})")
    if args.json_out:
        write_json(args.json_out, {"rerank_file": args.rerank_file, "qa_file": args.qa_file, "fusion": args.fusion,
                                   "depth": args.depth, "bm25_lists_below_depth": exhaustive, "rows": rows,
                                   "best_alpha": best_alpha})
    return rows


if __name__ == "__main__":
    main()
