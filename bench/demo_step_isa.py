"""The demo's fp32 training step (run_demo.sh's shape: 32 questions, 1 BM25 negative, passages cut at 128, chunks
32/32, frozen word embeddings) with and without `--attention_dropout 0`, under each CPU instruction-set cap, side by
side: a proxy for the demo's training time on a slower CPU than this one.

Each cap runs in its own process (the variables must be set before torch loads): `default` (what this CPU offers),
`avx2` (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2: torch's own kernels and oneDNN without AVX-512) and
`avx2_mkl` (the same + MKL_ENABLE_INSTRUCTIONS=AVX2, so the MKL matrix products lose AVX-512 too: closest to an
AVX2-only CPU). Within a process the two variants alternate step by step after one warm-up step of each, so load from
other processes hits both alike. Prints the CPU flags (from /proc/cpuinfo), torch's reported capability, the median
and fastest step per variant and the speed-up of `--attention_dropout 0` by each.

    python bench/demo_step_isa.py --data demo_outputs/data/retrieval_train_data/dual_train.json --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPS = {"default": {},
        "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
        "avx2_mkl": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def child(a: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from bench_bf16_step import Bench, cpu_info

    bench_args = argparse.Namespace(model=a.model, data=a.data, questions=32, hard_negatives=1, q_len=32, p_len=128,
                                    q_chunk=32, ctx_chunk=32, freeze_embeddings=True)
    b = Bench(bench_args)
    times: dict[str, list[float]] = {"dropout (demo today)": [], "--attention_dropout 0": []}
    for r in range(a.repeats + 1):
        for name in times:
            with b.variant("fp32" if name.startswith("dropout") else "fp32_flash"):
                t = b.whole(None)
            if r:  # the first round warms up
                times[name].append(t)
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    best = {k: round(min(v), 2) for k, v in times.items()}  # the least disturbed by other processes
    info = cpu_info()
    print(json.dumps({"cap": a.child, "torch_capability": torch.backends.cpu.get_cpu_capability(),
                      "cpu": info.get("model"), "cpu_flags": info.get("flags"), "threads": torch.get_num_threads(),
                      "median_step_s": med, "min_step_s": best, "steps_s": {k: [round(x, 2) for x in v] for k, v in times.items()},
                      "speedup_attention_dropout_0": {
                          "median": round(med["dropout (demo today)"] / med["--attention_dropout 0"], 2),
                          "min": round(best["dropout (demo today)"] / best["--attention_dropout 0"], 2)}}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="multilingual-e5-small")
    p.add_argument("--data", default=str(ROOT / "demo_outputs/data/retrieval_train_data/dual_train.json"))
    p.add_argument("--repeats", type=int, default=2, help="Timed steps per variant per cap (after one warm-up).")
    p.add_argument("--caps", nargs="+", choices=list(CAPS), default=list(CAPS))
    p.add_argument("--child", choices=list(CAPS), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    for cap in a.caps:
        env = {**os.environ, **CAPS[cap]}
        proc = subprocess.run([sys.executable, __file__, "--child", cap, "--model", a.model, "--data", a.data,
                               "--repeats", str(a.repeats)], env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{cap}: {proc.stderr[-2000:]}")
        print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
