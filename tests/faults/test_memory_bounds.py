"""Memory stays bounded: the step runs in a subprocess under resource.setrlimit(RLIMIT_AS) (address space, which
counts everything mapped: libraries, thread stacks, the output memmap) and must finish.

Bounds, measured on the dev machine (Linux x86-64, Python 3.11, torch 2.13 CPU, OMP_NUM_THREADS=1) and documented:
- preprocessing (release layout, no BM25) of 200,000 synthetic 100-character passages: VmPeak 166 MB (20,000
  passages: 141 MB; +140 bytes a passage for the ids kept). Bound: 256 MB.
- encoding one 50,000-passage shard with a tiny BERT (block 1,024): VmPeak 1,154 MB, 5 MB above a 2,000-passage
  shard (torch and its libraries map ~1.1 GB). Bound: the 2,000-passage run's VmPeak + 64 MB, so encoding 25x more
  passages may not grow memory by more than 64 MB.
- windowed flat CPU search, 2M x 64 float16 vectors in 4 windows of 500,000 rows (122 MiB as float32): address
  space +195 MiB above what was mapped before the search (+401 MiB before issue 22: the previous window held by the
  progress bar, and each window copied into a faiss index). Bound: one window + 96 MiB.
- the IVF training sample, 500,000 of 1M x 64 float16 rows (122 MiB as float32): +133 MiB (+420 MiB before issue 22,
  one array a row, then stacked). Bound: the sample + one read (65,536 rows) + 32 MiB.
"""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from dpr.data.formats import read_passages_tsv
from tests.faults.common import ROOT, env
from tests.tiny_encoder import CHARS, save_tiny_biencoder

pytestmark = pytest.mark.slow

RUNNER = """
import atexit, resource, runpy, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
def peak():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    print("VMPEAK_KB", status["VmPeak"].split()[0], file=sys.stderr)
atexit.register(peak)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
MB = 1 << 20


def run_bounded(limit_bytes: int, script: str, *args: object) -> tuple[subprocess.CompletedProcess, int]:
    """Run a top-level script under RLIMIT_AS (0: none); returns the process and its VmPeak in bytes."""
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(limit_bytes), str(ROOT / script), *map(str, args)],
                          cwd=ROOT, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, int(re.findall(r"VMPEAK_KB (\d+)", proc.stderr)[-1]) * 1024


def _texts(n: int, lo: int, hi: int):
    rng = random.Random(0)
    base = "".join(rng.choices(CHARS, k=20000))
    for i in range(n):
        start = (i * 7919) % (len(base) - hi)
        yield base[start:start + lo + i % (hi - lo + 1)]


def test_preprocessing_200k_passages_within_256_mb(tmp_path):
    n, src = 200_000, tmp_path / "in"
    src.mkdir()
    with open(src / "passage_collection.json", "w", encoding="utf-8") as f:
        for i, text in enumerate(_texts(n, 100, 100)):
            f.write(json.dumps({"paragraph_id": f"{i:032x}", "paragraph_text": text}, ensure_ascii=False) + "\n")
    for name in ("train", "dev"):
        (src / f"{name}.json").write_text("".join(json.dumps(
            {"question_id": f"{name}{q}", "question": "北京在哪", "answer_paragraphs": [{"paragraph_id": f"{q:032x}"}]})
            + "\n" for q in range(500)))
    _, peak = run_bounded(256 * MB, "data/preprocess_dureader.py", "--input_dir", src, "--output_dir",
                          tmp_path / "out", "--no_bm25")
    assert peak <= 256 * MB
    assert sum(1 for _ in read_passages_tsv(tmp_path / "out" / "passages.tsv")) == n


def test_encoding_a_large_shard_grows_memory_by_less_than_64_mb(tmp_path):
    model = save_tiny_biencoder(tmp_path / "model")

    def encode(n: int, limit: int) -> int:
        ctx = tmp_path / f"p{n}.tsv"
        with open(ctx, "w", encoding="utf-8") as f:
            f.write("id\ttext\ttitle\n" + "".join(f"p{i}\t{t}\t\n" for i, t in enumerate(_texts(n, 6, 15))))
        _, peak = run_bounded(limit, "generate_dense_embeddings.py", "--model_file", model, "--ctx_file", ctx,
                              "--out_file", tmp_path / f"emb{n}", "--p_sequence_length", "16", "--batch_size", "256",
                              "--block_size", "1024", "--num_threads", "1")
        return peak

    small = encode(2_000, 0)
    large = encode(50_000, small + 64 * MB)
    assert large <= small + 64 * MB


BOUNDED_STEP = """
import resource, sys
import numpy as np
from dpr.index.embeddings import open_shards
from dpr.index.faiss_index import IndexSpec
from dpr.index import search

what, pattern, size, margin = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
shards = open_shards(pattern)
dim, total = shards[0].dim, sum(len(s.ids) for s in shards)
bounds = np.cumsum([0] + [len(s.ids) for s in shards])
queries = np.random.default_rng(0).standard_normal((64, dim)).astype(np.float32)
search.exact_search(np.ones((100, dim), np.float32), queries, 5)  # faiss / BLAS set up before the limit
for s in shards:  # the shard files' pages mapped and touched before the limit (they are page cache, not the step's)
    np.asarray(s.vectors).sum()
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
if what == "windows":
    allowed = size * dim * 4  # one float32 window
else:
    allowed = size * dim * 4 + search.SAMPLE_READ_ROWS * dim * shards[0].vectors.itemsize  # the sample + one read
resource.setrlimit(resource.RLIMIT_AS, (vm + allowed + margin,) * 2)
if what == "windows":
    scores, rows = search.search_shards(shards, queries, 10, IndexSpec("flat"), search_shard_size=size)
    print("WINDOWS", -(-total // size), int(rows.max() >= total - size))
else:
    sample = search._sample_rows(shards, bounds, size)
    print("SAMPLE", sample.shape[0])
"""


def _fp16_shards(tmp_path, rows: int, dim: int, n_shards: int) -> str:
    import numpy as np

    from dpr.index.embeddings import save_shard
    rng = np.random.default_rng(0)
    per = rows // n_shards
    for k in range(n_shards):
        save_shard(tmp_path / f"emb_shard{k}", [f"d{k * per + i}" for i in range(per)],
                   rng.standard_normal((per, dim), dtype=np.float32), fp16=True)
    return str(tmp_path / "emb_shard*.npy")


def test_windowed_search_holds_one_window(tmp_path):
    """Flat CPU search over 4 windows of 122 MiB (float32, read from float16 shards) within one window + 96 MiB above
    what was mapped before (faiss's distance tiles, the progress bar's thread): neither the previous window nor an
    index's copy of the current one may be held."""
    pattern = _fp16_shards(tmp_path, 2_000_000, 64, 2)
    step = tmp_path / "step.py"
    step.write_text(BOUNDED_STEP)
    proc, _ = run_bounded(0, step, "windows", pattern, 500_000, 96 * MB)
    assert "WINDOWS 4 1" in proc.stdout


def test_ivf_training_sample_needs_the_sample_plus_one_read(tmp_path):
    """A 500,000-row training sample (122 MiB float32) from float16 shards within the sample + one read + 32 MiB (the
    row-by-row gathering it replaced held about twice the sample)."""
    pattern = _fp16_shards(tmp_path, 1_000_000, 64, 3)
    step = tmp_path / "step.py"
    step.write_text(BOUNDED_STEP)
    proc, _ = run_bounded(0, step, "sample", pattern, 500_000, 32 * MB)
    assert "SAMPLE 500000" in proc.stdout
