"""Host memory of windowed CPU search and of the IVF training sample, measured: the process's anonymous RSS (RssAnon,
what the kernel cannot drop; memory-mapped shard pages are page cache) sampled every 2 ms, peak minus the value
before the step, in units of one window / one sample of float32 vectors.

  python bench/search_memory.py windows --rows 1000000 --dim 768 --window 250000
  python bench/search_memory.py sample --rows 1000000 --dim 768 --sample_rows 360000 [--before]

`windows` runs dpr.index.search.search_shards with a flat CPU index and --search_shard_size WINDOW over float16
shards (each window is then a float32 copy, the worst case; float32 shards of one file give a memory-mapped view
instead). `sample` times dpr.index.search._sample_rows (the IVF training sample) and, with --before, the
one-row-at-a-time gathering it replaced (both from a warm page cache), then projects the time to the 8.1M x 768
collection's 2,914,304-row sample.
Synthetic vectors are written once to --work_dir and reused.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpr.index.embeddings import open_shards, write_ids  # noqa: E402
from dpr.index.faiss_index import IndexSpec  # noqa: E402
from dpr.index.search import _sample_rows, search_shards  # noqa: E402

MB = 1 << 20
FULL_SAMPLE_ROWS, FULL_DIM = 2_914_304, 768  # the default IVF's sample over 8.1M x 768 (bench/memory_table.py)


def rss_anon() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class AnonPeak:
    """Peak RssAnon above its value at entry, sampled by a thread every `every` seconds."""

    def __init__(self, every: float = 0.002):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon() - self.base)
            time.sleep(self.every)

    def __enter__(self) -> AnonPeak:
        self.base = rss_anon()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon() - self.base)


def write_shards(d: Path, rows: int, dim: int, n_shards: int, dtype: str) -> str:
    """n_shards synthetic shard files (written block by block), reused when already there; returns the glob."""
    d.mkdir(parents=True, exist_ok=True)
    per = -(-rows // n_shards)
    rng = np.random.default_rng(0)
    for k in range(n_shards):
        lo, hi = k * per, min(rows, (k + 1) * per)
        npy = d / f"emb_{dtype}_{rows}x{dim}_shard{k}.npy"
        if npy.is_file():
            continue
        tmp = npy.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(hi - lo, dim))
        for s in range(0, hi - lo, 50_000):
            out[s:s + 50_000] = rng.standard_normal((min(50_000, hi - lo - s), dim), dtype=np.float32)
        out.flush()
        del out
        write_ids(npy.with_name(npy.name[:-4] + ".ids.txt"), [f"d{i}" for i in range(lo, hi)])
        tmp.rename(npy)
    return str(d / f"emb_{dtype}_{rows}x{dim}_shard*.npy")


def sample_rows_before(shards, bounds: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """The gathering before issue 22: one small array a row, then stacked."""
    rows = np.sort(np.random.default_rng(seed).choice(int(bounds[-1]), size=n, replace=False))
    which = np.searchsorted(bounds, rows, side="right") - 1
    return np.stack([np.asarray(shards[w].vectors[r - bounds[w]], dtype=np.float32) for w, r in zip(which, rows)])


def bench_windows(a: argparse.Namespace) -> dict:
    shards = open_shards(write_shards(a.work_dir, a.rows, a.dim, a.shards, a.dtype))
    queries = np.random.default_rng(1).standard_normal((16, a.dim), dtype=np.float32)
    window_bytes = min(a.window, a.rows) * a.dim * 4
    t0 = time.time()
    with AnonPeak() as p:
        search_shards(shards, queries, 10, IndexSpec("flat"), search_shard_size=a.window)
    return {"step": "windowed flat search", "rows": a.rows, "dim": a.dim, "shard_dtype": a.dtype,
            "window_rows": a.window, "windows": -(-a.rows // a.window), "seconds": round(time.time() - t0, 1),
            "window_mb": round(window_bytes / MB), "peak_anon_mb": round(p.peak / MB),
            "peak_in_windows": round(p.peak / window_bytes, 2)}


def bench_sample(a: argparse.Namespace) -> list[dict]:
    shards = open_shards(write_shards(a.work_dir, a.rows, a.dim, a.shards, a.dtype))
    bounds = np.cumsum([0] + [len(s.ids) for s in shards])
    sample_bytes = a.sample_rows * a.dim * 4
    for shard in shards:  # warm the page cache, so that each method reads from memory, not the first from disk
        with open(shard.path, "rb") as f:
            while f.read(64 * MB):
                pass
    out = []
    for name, fn in [("vectorised (now)", _sample_rows)] + ([("one row at a time (before)", sample_rows_before)]
                                                           if a.before else []):
        t0 = time.time()
        with AnonPeak() as p:
            sample = fn(shards, bounds, a.sample_rows)
            del sample
        dt = time.time() - t0
        rate = a.sample_rows / dt
        out.append({"step": f"IVF training sample, {name}", "rows": a.rows, "dim": a.dim, "shard_dtype": a.dtype,
                    "sample_rows": a.sample_rows, "seconds": round(dt, 2), "rows_per_s": round(rate),
                    "sample_mb": round(sample_bytes / MB), "peak_anon_mb": round(p.peak / MB),
                    "peak_in_samples": round(p.peak / sample_bytes, 2),
                    "projected_s_2914304x768": round(FULL_SAMPLE_ROWS / rate * FULL_DIM / a.dim, 1)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["windows", "sample"])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--window", type=int, default=250_000)
    p.add_argument("--sample_rows", type=int, default=360_000, help="default: the 36%% of 8.1M the IVF samples")
    p.add_argument("--before", action="store_true", help="also time the gathering it replaced")
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/dpr_search_memory_bench"))
    a = p.parse_args()
    for row in ([bench_windows(a)] if a.what == "windows" else bench_sample(a)):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
