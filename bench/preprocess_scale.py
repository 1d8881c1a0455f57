"""Scale check for data/preprocess_dureader.py: a synthetic N-passage collection, timed with /usr/bin/time -v.

Writes a synthetic DuReader-retrieval input (release JSON and/or baseline layout: random Chinese text, ~200 chars a
passage, 32-hex ids, a few thousand labelled questions), runs the preprocess script on it (without BM25 mining unless
--with_bm25), and prints wall time and peak RSS per layout. With --jieba_tsv it also measures jieba tokenization
speed (what BM25 mining costs per passage) on real passages.

  python bench/preprocess_scale.py --num_passages 1000000 --jieba_tsv data/cmrc2018_retrieval/passages.tsv

With --project it measures, with one worker, each stage's cost per passage on real passages (--project_tsv, e.g. the
CMRC2018 mini corpus; its tokens tiled --tile times for the index and the search) and which part of it stays serial
(reading and writing the collection, numbering the tokens, the BM25 index), and projects step 1 on
--target_passages over --target_cores cores (Amdahl: serial + parallel / cores), per layout:

  python bench/preprocess_scale.py --project --project_tsv data/cmrc2018_retrieval/passages.tsv
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POOL = np.array(list("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可"
                     "里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从"
                     "动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等"
                     "几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山"
                     "五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更"))
ENDS = np.array(list("。，。！？"))


def synthetic_texts(n: int, length: int, seed: int, chunk: int = 50_000):
    """n random Chinese passages of `length` chars, a sentence mark every ~20 chars."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        chars = POOL[rng.integers(0, len(POOL), size=(m, length))]
        marks = rng.random((m, length)) < 0.05
        chars[marks] = ENDS[rng.integers(0, len(ENDS), size=int(marks.sum()))]
        yield from (s for s in chars.view(f"<U{length}").ravel())


def pid_of(i: int) -> str:
    return f"{i:032x}"


def write_release(d: Path, n: int, length: int, n_train: int, n_dev: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "passage_collection.json", "w", encoding="utf-8") as f:
        for i, text in enumerate(synthetic_texts(n, length, seed=0)):
            f.write(json.dumps({"paragraph_id": pid_of(i), "paragraph_text": text}, ensure_ascii=False) + "\n")
    rng = np.random.default_rng(1)
    for name, count in (("train.json", n_train), ("dev.json", n_dev)):
        with open(d / name, "w", encoding="utf-8") as f:
            for q in range(count):
                gold = [int(x) for x in rng.integers(0, n, size=2)]
                f.write(json.dumps({"question_id": f"{name[:-5]}{q}", "question": f"问题{q}是什么",
                                    "answer_paragraphs": [{"paragraph_id": pid_of(g), "paragraph_text": "正文"}
                                                          for g in gold]}, ensure_ascii=False) + "\n")


def write_baseline(d: Path, n: int, length: int, n_train: int, n_dev: int, parts: int = 4) -> None:
    (d / "train").mkdir(parents=True, exist_ok=True)
    (d / "dev").mkdir(exist_ok=True)
    (d / "passage-collection").mkdir(exist_ok=True)
    texts = synthetic_texts(n, length, seed=0)
    per_part = -(-n // parts)
    sample: list[str] = []
    for k in range(parts):
        with open(d / "passage-collection" / f"part-{k:02d}", "w", encoding="utf-8") as f:
            for _ in range(min(per_part, n - k * per_part)):
                text = next(texts)
                if len(sample) < 4 * n_train:
                    sample.append(text)
                f.write(f"null\tnull\t{text}\tnull\n")
    with open(d / "passage-collection" / "passage2id.map.json", "w") as f:
        json.dump({str(i): pid_of(i) for i in range(n)}, f)
    with open(d / "train" / "dual.train.tsv", "w", encoding="utf-8") as f:
        for q in range(n_train):
            for r in range(4):  # four rows per query: its positive with four different negatives
                f.write(f"问题{q}\tnull\t{sample[q]}\tnull\t{sample[(q + 1 + r) % len(sample)]}\t0\n")
    with open(d / "dev" / "dev.json", "w", encoding="utf-8") as f:
        for q in range(n_dev):
            f.write(json.dumps({"question_id": f"dev{q}", "question": f"问题{q}", "answer_paragraphs": [
                {"paragraph_id": pid_of(q), "paragraph_text": "正文"}]}, ensure_ascii=False) + "\n")


def timed_preprocess(input_dir: Path, output_dir: Path, bm25: bool, workers: int) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "data" / "preprocess_dureader.py"),
           "--input_dir", str(input_dir), "--output_dir", str(output_dir), "--num_workers", str(workers)]
    if not bm25:
        cmd.append("--no_bm25")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"preprocess failed:\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    report = json.loads(proc.stdout)
    return {"command": " ".join(cmd[2:]), "wall": wall.group(1) if wall else None,
            "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
            "passages": report["counts"]["passages"], "stage_timings_s": report["timings"]}


def jieba_speed(tsv: Path, n: int) -> dict:
    import jieba

    from dpr.data.bm25 import TokenizedCorpus
    from dpr.data.formats import read_passages_tsv

    jieba.initialize()
    texts = [t for _, (_, t, _) in zip(range(n), read_passages_tsv(tsv))]
    t0 = time.time()
    TokenizedCorpus.build(texts)
    dt = time.time() - t0
    chars = sum(map(len, texts))
    return {"passages": len(texts), "seconds": round(dt, 2), "passages_per_s": round(len(texts) / dt),
            "chars_per_s": round(chars / dt)}


DUREADER = {"passages": 8_096_668, "release_questions": 86_395 + 2_000, "baseline_questions": 2_000}


def stage_costs(tsv: Path, tile: int, n_queries: int, stream_passages: int, work_dir: Path) -> dict:
    """Seconds per passage (or per query) of each stage of step 1, one worker, and the mean passage length."""
    import jieba

    from dpr.data.bm25 import TOKENIZE_CHUNK, BM25Index, TokenizedCorpus, _chunked, _tokenize_chunk
    from dpr.data.formats import read_passages_tsv

    jieba.initialize()
    texts = [f"{title} {text}" if title else text for _, text, title in read_passages_tsv(tsv)]
    t0 = time.perf_counter()
    parts = list(map(_tokenize_chunk, _chunked(iter(texts), TOKENIZE_CHUNK)))  # what the workers do
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    corpus = TokenizedCorpus.merge(parts)  # what the parent does, serially
    t_merge = time.perf_counter() - t0
    lengths = np.diff(corpus.offsets)
    tiled = TokenizedCorpus(corpus.vocab, np.tile(corpus.ids, tile),
                            np.concatenate([[0], np.cumsum(np.tile(lengths, tile))]))
    t0 = time.perf_counter()
    index = BM25Index(tiled)  # one thread: counted as serial (an upper bound; its sorts run in threads)
    t_index = time.perf_counter() - t0
    queries = [t[:16] for t in texts[:: max(1, len(texts) // n_queries)][:n_queries]]
    t0 = time.perf_counter()
    index.search(queries, 60)
    t_search = time.perf_counter() - t0
    src, out = work_dir / "stream_input", work_dir / "stream_output"
    write_release(src, stream_passages, int(np.mean([len(t) for t in texts])), 1000, 200)
    stream = timed_preprocess(src, out, bm25=False, workers=1)["stage_timings_s"]
    shutil.rmtree(src)
    shutil.rmtree(out)
    n, n_tiled = len(texts), tiled.num_docs
    return {"passages": n, "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
            "tokens_per_passage": round(float(lengths.mean()), 1),
            "tokenize_s": t_tok / n, "merge_s": t_merge / n, "index_s": t_index / n_tiled,
            "search_s_per_query_per_passage": t_search / len(queries) / n_tiled,
            "stream_s": (stream["total_s"]) / stream_passages, "index_passages": n_tiled,
            "search_queries": len(queries), "stream_passages": stream_passages}


def project(c: dict, n: int, cores: int, questions: int, chars: float) -> dict:
    """Step 1's time for n passages of `chars` characters on `cores` cores: serial + parallel / cores."""
    scale = chars / c["mean_chars"]  # jieba, the index and BM25 search cost per character / token
    serial = n * (c["stream_s"] + scale * (c["merge_s"] + c["index_s"]))
    parallel = n * scale * c["tokenize_s"] + questions * n * scale * c["search_s_per_query_per_passage"]
    total = serial + parallel / cores
    return {"passages": n, "cores": cores, "questions_mined": questions, "passage_chars": chars,
            "serial_s": round(serial), "parallel_core_s": round(parallel), "serial_share_1_core": round(
                serial / (serial + parallel), 3), "projected_minutes": round(total / 60, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_passages", type=int, default=1_000_000)
    p.add_argument("--passage_chars", type=int, default=200)
    p.add_argument("--num_train", type=int, default=10_000)
    p.add_argument("--num_dev", type=int, default=2_000)
    p.add_argument("--layouts", nargs="+", choices=["release", "baseline"], default=["release", "baseline"])
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/dpr_preprocess_bench"))
    p.add_argument("--jieba_tsv", type=Path, default=None, help="Real passages.tsv to time jieba on.")
    p.add_argument("--jieba_passages", type=int, default=5000)
    p.add_argument("--keep", action="store_true", help="Keep the generated files.")
    p.add_argument("--with_bm25", action="store_true",
                   help="Mine BM25 negatives too (jieba over every synthetic passage: slow; use fewer passages).")
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--project", action="store_true", help="Measure per-stage costs and project step 1 (see above).")
    p.add_argument("--project_tsv", type=Path, default=ROOT / "data" / "cmrc2018_retrieval" / "passages.tsv")
    p.add_argument("--tile", type=int, default=20, help="Copies of the passages' tokens the index and search use.")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--stream_passages", type=int, default=100_000)
    p.add_argument("--target_passages", type=int, default=DUREADER["passages"])
    p.add_argument("--target_cores", type=int, default=16)
    p.add_argument("--target_chars", type=float, default=None,
                   help="Mean passage length of the target collection (default: that of --project_tsv).")
    args = p.parse_args()
    if args.project:
        costs = stage_costs(args.project_tsv, args.tile, args.queries, args.stream_passages, args.work_dir)
        print(json.dumps({"per_passage_costs_one_worker": {k: (f"{v:.3g}" if isinstance(v, float) else v)
                                                           for k, v in costs.items()}}))
        chars = args.target_chars or costs["mean_chars"]
        for layout in ("release", "baseline"):
            print(json.dumps({layout: project(costs, args.target_passages, args.target_cores,
                                              DUREADER[f"{layout}_questions"], chars)}))
        return
    if not Path("/usr/bin/time").exists():
        raise SystemExit("/usr/bin/time is missing (Debian/Ubuntu: apt-get install -y time)")
    results = {}
    for layout in args.layouts:
        src, out = args.work_dir / f"{layout}_input", args.work_dir / f"{layout}_output"
        t0 = time.time()
        (write_release if layout == "release" else write_baseline)(src, args.num_passages, args.passage_chars,
                                                                  args.num_train, args.num_dev)
        gen = time.time() - t0
        results[layout] = {"generate_s": round(gen, 1),
                           **timed_preprocess(src, out, args.with_bm25, args.num_workers)}
        print(json.dumps({layout: results[layout]}, ensure_ascii=False), flush=True)
        if not args.keep:
            shutil.rmtree(src)
            shutil.rmtree(out)
    if args.jieba_tsv:
        results["jieba"] = jieba_speed(args.jieba_tsv, args.jieba_passages)
        print(json.dumps({"jieba": results["jieba"]}))


if __name__ == "__main__":
    main()
