"""How fast one question is answered from the shell: dense_retriever.py --query (cold: process start to the printed
answer, imports, model and index loading included) and, at the prompt (--interactive), the time of each further
question (question written to stdin -> its last result line read back).

Usage: python bench/query_latency.py --model_file M --index_dir D --ctx_file passages.tsv --qa_file test.json
       [--questions 20] [--cold_runs 3] [--n_docs 5] [-- extra dense_retriever flags]
Prints one JSON object (times in seconds; the CPU flags and core count with them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpr.data.formats import read_questions  # noqa: E402


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_file", required=True)
    p.add_argument("--index_dir", required=True)
    p.add_argument("--ctx_file", required=True)
    p.add_argument("--qa_file", required=True, help="Questions to ask (their texts only).")
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--cold_runs", type=int, default=3)
    p.add_argument("--n_docs", type=int, default=5)
    p.add_argument("extra", nargs="*", help="More dense_retriever.py flags (after --).")
    args = p.parse_args()
    questions = [q for _, q, _ in read_questions(args.qa_file)][: args.questions + args.cold_runs]
    base = [sys.executable, str(ROOT / "dense_retriever.py"), "--model_file", args.model_file, "--index_dir",
            args.index_dir, "--ctx_file", args.ctx_file, "--n_docs", str(args.n_docs), *args.extra]

    cold = []
    for q in questions[: args.cold_runs]:
        t0 = time.perf_counter()
        r = subprocess.run(base + ["--query", q], capture_output=True, text=True, cwd=ROOT)
        cold.append(time.perf_counter() - t0)
        if r.returncode != 0:
            sys.exit(r.stderr[-2000:])
        first_answer = r.stdout.splitlines()[0]

    proc = subprocess.Popen(base + ["--interactive"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, bufsize=1)
    t0 = time.perf_counter()
    per_question = []
    for n, q in enumerate(questions[args.cold_runs:]):
        start = time.perf_counter()
        proc.stdin.write(q + "\n")
        proc.stdin.flush()
        for _ in range(args.n_docs):
            proc.stdout.readline()
        per_question.append(time.perf_counter() - start)
        if n == 0:
            first_prompt = per_question[0] + (start - t0)  # start-up and the first question together
    proc.stdin.write("\n")
    proc.stdin.close()
    proc.wait()
    further = per_question[1:]
    print(json.dumps({
        "cold_query_s": [round(t, 2) for t in cold], "cold_query_median_s": round(statistics.median(cold), 2),
        "prompt_first_question_incl_startup_s": round(first_prompt, 2),
        "prompt_further_questions": len(further),
        "prompt_further_median_s": round(statistics.median(further), 3),
        "prompt_further_max_s": round(max(further), 3),
        "example_first_line": first_answer, "cores": os.cpu_count(), "cpu_flags": cpu_flags(),
        "loadavg_1min": round(os.getloadavg()[0], 1), "python": platform.python_version(),
        "command": " ".join(base[1:]),
    }, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
