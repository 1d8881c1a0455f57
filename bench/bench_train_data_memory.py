"""Resident memory of the training data: our compact store vs json.load of the same DPR JSON file.

Each measurement runs in a fresh subprocess; figure = peak RSS (getrusage ru_maxrss) minus the RSS after imports.
Usage: python bench/bench_train_data_memory.py [DPR_JSON]
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "data/cmrc2018_retrieval/retrieval_train_data/dual_train.json"


def child(kind: str, path: str) -> None:
    sys.path.insert(0, str(ROOT))
    from dpr.training.data import BiEncoderData

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if kind == "compact":
        data = BiEncoderData(path)
        extra = {"questions": len(data), "distinct_passages": len(data.passages),
                 "passage_utf8_mb": round(len(data.passages.blob) / 2**20, 1)}
    else:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
        extra = {"questions": len(items)}
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"loader": kind, "file_mb": round(os.path.getsize(path) / 2**20, 1),
                      "peak_increase_mb": round((peak - base) / 1024), "load_s": round(dt, 1), **extra}))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        return child(sys.argv[2], sys.argv[3])
    path = sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT)
    for kind in ("compact", "json.load"):
        out = subprocess.run([sys.executable, __file__, "child", kind, path], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr[-2000:])


if __name__ == "__main__":
    main()
