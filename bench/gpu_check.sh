#!/usr/bin/env bash
# One GPU check at the reference command's shapes (see bench/gpu_check.py), cut off at 5 minutes so a rerun fits the 15 device
# minutes. Usage: bash bench/gpu_check.sh [--tiny]     (writes $OUT/gpu_check.json when $OUT is set)
# faiss-gpu is optional: without it the FAISS part is one "skipped" line. The device image has no faiss; a wheel
# only helps if it and its CUDA libraries travel in the call's carry (64 MiB in all), e.g. PYTHONPATH=wheels/faiss.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(command -v python || command -v python3)  # the device image may have python3 only
out="${OUT:-.}/gpu_check.json"
timeout 300 "$py" bench/gpu_check.py "$@" | tee /dev/stderr | "$py" -c '
import json, sys
text = sys.stdin.read(); start = text.rfind("\n{\n") + 1
json.loads(text[start:]); open(sys.argv[1], "w").write(text[start:])' "$out"
echo "wrote $out"
