"""How long the content fingerprint of a tower takes (a BERT-base-sized and an e5-small-sized random tower saved
with save_pretrained, hashed from disk as generate_dense_embeddings and dense_retriever do; file cache warm).

    nice -n 10 python bench/bench_fingerprint.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from transformers import BertConfig, BertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.models.fingerprint import tower_sha256  # noqa: E402


def main() -> None:
    sizes = {"bert-base (768 x 12, vocab 21128)": BertConfig(vocab_size=21128),
             "e5-small-sized (384 x 12, vocab 250037)": BertConfig(vocab_size=250037, hidden_size=384,
                                                                   intermediate_size=1536)}
    for name, cfg in sizes.items():
        with tempfile.TemporaryDirectory() as d:
            BertModel(cfg, add_pooling_layer=False).save_pretrained(d)
            mb = sum(p.stat().st_size for p in Path(d).iterdir()) / 2**20
            tower_sha256(d)  # warm the page cache
            t0 = time.perf_counter()
            tower_sha256(d)
            print(f"{name}: {mb:.0f} MiB on disk, fingerprint in {time.perf_counter() - t0:.2f}s")


if __name__ == "__main__":
    main()
