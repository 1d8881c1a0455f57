#!/usr/bin/env bash
# One GPU check at the seed's shapes (see bench/gpu_check.py); finishes within 8 minutes on one H100/H200.
# Usage: bash bench/gpu_check.sh [--tiny]     (writes $OUT/gpu_check.json when $OUT is set)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}/gpu_check.json"
timeout 480 python bench/gpu_check.py "$@" | tee /dev/stderr | python -c '
import json, sys
text = sys.stdin.read(); start = text.rfind("\n{\n") + 1
json.loads(text[start:]); open(sys.argv[1], "w").write(text[start:])' "$out"
echo "wrote $out"
