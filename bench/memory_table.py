"""GPU and host memory each index type needs, computed from faiss's storage layouts; the CPU-window and IVF-sample
peaks as measured by bench/search_memory.py (anonymous RSS, in windows / samples; scaled here to n x dim).

    python bench/memory_table.py [--n 8100000] [--dim 768]
"""
from __future__ import annotations

import argparse
import math

GiB = 2**30


def rows(n: int, dim: int) -> list[tuple[str, str, str, str, str]]:
    fp32 = n * dim * 4
    piece = (1 << 20) * dim * 4  # one FLAT_PIECE_ROWS staging copy (dpr/index/faiss_index.py)
    nlist_default = max(1, min(int(4 * math.sqrt(n)), n // 39))
    out = []
    out.append(("flat, GPU fp32", "(default with faiss-gpu)", f"{fp32 / GiB:.1f}",
                f"{piece / GiB:.1f} (one 1M-row piece while building)",
                "exact; + faiss's scratch (about 1.5 GiB a GPU)"))
    out.append(("flat, GPU fp16", "--faiss_fp16", f"{fp32 / 2 / GiB:.1f} (+{piece / GiB:.1f} while building)",
                f"{piece / GiB:.1f}", "scores in fp16 storage, near-exact"))
    for g in (2, 4):
        out.append((f"flat, {g} GPUs fp16", "--faiss_fp16 --faiss_shard", f"{fp32 / 2 / g / GiB:.1f} each",
                    f"{piece / GiB:.1f}", f"e.g. {g} cards of {32 // g} GB"))
    out.append(("flat, CPU", "--faiss_cpu (or no GPU)", "0", f"{fp32 / GiB:.1f}",
                "float32 even when the .npy files are float16 (--save_fp16)"))
    window = min(n, 2_000_000) * dim * 4
    out.append(("flat, CPU windows", "--faiss_cpu --search_shard_size 2000000", "0",
                f"{window / GiB:.1f} (measured: 1.00 window; float32 vectors within one file: page cache only)",
                "exact, same results; one window at a time, searched where it lies (no index copy)"))
    for nlist in (nlist_default, 65536):
        m = dim // 8 if nlist == nlist_default else 64
        codes = n * (m + 8)  # PQ code + 64-bit id per vector
        centroids = nlist * dim * 4
        sample = min(n, 256 * nlist) * dim * 4
        read = min(n, 1 << 16) * dim * 4  # one SAMPLE_READ_ROWS read (dpr/index/search.py), at most float32
        flag = "--index_type ivfpq" if nlist == nlist_default else f"--index_factory IVF{nlist},PQ{m}np"
        out.append((f"IVF{nlist},PQ{m}np", flag, f"{(codes + centroids) / GiB:.2f}",
                    f"{sample / GiB:.1f} (training sample of {min(n, 256 * nlist):,}) + {read / GiB:.1f} (one read; "
                    f"measured: 1.07 samples), then {codes / GiB:.2f}",
                    "approximate; saved and reused (emb.index.*.faiss)"))
    links = n * 32 * 2 * 4 * (1 + 1 / 31)  # level-0 links (2M) + upper levels (~1/(M-1))
    out.append(("HNSW32,Flat", "--index_type hnsw", "0 (no GPU version)", f"{(fp32 + links) / GiB:.1f}",
                "approximate; saved and reused; CPU only"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=8_100_000)
    ap.add_argument("--dim", type=int, default=768)
    a = ap.parse_args()
    print(f"Computed for {a.n:,} x {a.dim} (float32 vectors: {a.n * a.dim * 4 / 1e9:.1f} GB). GiB = 2^30 bytes.\n")
    print("| index | flags | GPU memory (GiB) | host RAM (GiB) | notes |")
    print("|---|---|---|---|---|")
    for r in rows(a.n, a.dim):
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
