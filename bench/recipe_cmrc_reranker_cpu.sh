#!/usr/bin/env bash
# The reranker stage of the CMRC2018 recipe (after bench/recipe_cmrc_cpu.sh, whose OUT holds the hybrid dev run):
# train a cross-encoder on CMRC train (run_train_reranker.sh, dev MRR@10 logged every EVAL_EVERY steps: the curve of
# dev MRR@10 against training pairs), rerank the hybrid and the BM25 dev runs with it (data/rerank.py, the rule of
# dense_retriever.py --reranker) on the first DEV_QS dev questions (on CPU the whole dev set at depth 50 is 161k
# pairs: hours), and with DENOISE=1 denoise the training file's BM25 negatives (data/denoise_negatives.py) and train
# the dense model again on them with bench/recipe_cmrc_cpu.sh's settings (same budget). Prints one table (all rows
# on the same dev questions) with wall times and scoring pairs/s, and the curve.
#
#   bash bench/recipe_cmrc_cpu.sh && bash bench/recipe_cmrc_reranker_cpu.sh       # CPU: defaults below
#   DEV_QS=0 RR_TRAIN_QS=0 DENOISE=1 bash bench/recipe_cmrc_reranker_cpu.sh         # GPU: everything
# Every value below can be overridden from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

DATA=${DATA:-./demo_outputs/data}                 # the corpus bench/recipe_cmrc_cpu.sh used
RECIPE_OUT=${RECIPE_OUT:-./outputs/recipe_cmrc_cpu}   # its OUT: hybrid_dev.json (and bm25_dev.json)
OUT=${OUT:-./outputs/recipe_cmrc_reranker}
RR_MODEL=${RR_MODEL:-multilingual-e5-small}       # the encoder under the new one-logit head
ON_CUDA=${ON_CUDA:-$(python -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)}
if [ "$ON_CUDA" = 1 ]; then d_qs=0; d_dev=0; d_batch=32; else d_qs=1024; d_dev=300; d_batch=8; fi
RR_TRAIN_QS=${RR_TRAIN_QS:-$d_qs}                 # train questions (0: all 10,142)
DEV_QS=${DEV_QS:-$d_dev}                          # the first N CMRC dev questions reranked and scored (0: all 3,219)
RR_BATCH=${RR_BATCH:-$d_batch}                    # questions per step (x GROUP_SIZE pairs)
GROUP_SIZE=${GROUP_SIZE:-8}                       # positive + 7 BM25 negatives, listwise softmax cross-entropy
MAX_LEN=${MAX_LEN:-192}                           # pair cap: question + a 200-character passage fit
Q_LEN=${Q_LEN:-32}
LR=${LR:-3e-05}
EPOCHS=${EPOCHS:-1}
WARMUP_STEPS=${WARMUP_STEPS:-10}
EVAL_EVERY=${EVAL_EVERY:-16}                      # steps between dev points of the curve
RR_DEV_QS=${RR_DEV_QS:-100}                       # dev questions (BM25 candidates) for the curve and checkpoint
DEPTH=${DEPTH:-50}                                # first-stage passages reranked per dev question
PRECISION=${PRECISION-auto}                       # bf16 where the CPU is fast at it, fp16 on CUDA, else fp32
RR_EXTRA=${RR_EXTRA---attention_dropout 0}        # fused attention: ~2x faster CPU steps (issue 28)
DENOISE=${DENOISE:-0}                             # 1: denoise the training negatives and train the dense model on them
DENOISE_THRESHOLD=${DENOISE_THRESHOLD:-0.5}

log=$OUT/recipe.log
mkdir -p "$OUT"
: > "$log"
step() { echo "[$(( $(date +%s) - start ))s $(date +%H:%M:%S)] $*" | tee -a "$log"; }
fail() { echo "recipe_cmrc_reranker_cpu.sh: error: $*" >&2; exit 2; }
[ -f "$DATA/retrieval_train_data/dual_train.json" ] || fail "no corpus in DATA=$DATA: run bench/recipe_cmrc_cpu.sh first"
[ -f "$RECIPE_OUT/hybrid_dev.json" ] || fail "no hybrid run in RECIPE_OUT=$RECIPE_OUT: run bench/recipe_cmrc_cpu.sh first"

# the dev questions scored here, and each first-stage run cut to them (the same questions in every row)
python - "$DATA/dev.json" "$DEV_QS" "$OUT" "$RECIPE_OUT/hybrid_dev.json" "$RECIPE_OUT/bm25_dev.json" <<'PY'
import json, sys
from pathlib import Path
dev, n, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
lines = [line for line in open(dev, encoding="utf-8") if line.strip()]
lines = lines[:n] if n else lines
(out / "dev_subset.json").write_text("".join(lines), encoding="utf-8")
qids = [json.loads(line)["question_id"] for line in lines]
for name, path in (("hybrid", sys.argv[4]), ("bm25", sys.argv[5])):
    if Path(path).is_file():
        run = json.load(open(path, encoding="utf-8"))
        (out / f"{name}_subset.json").write_text(json.dumps({q: run[q] for q in qids}), encoding="utf-8")
PY
if [ ! -f "$OUT/bm25_subset.json" ]; then
  python data/bm25_retriever.py --qa_file "$OUT/dev_subset.json" --ctx_file "$DATA/passages.tsv" \
    --out_file "$OUT/bm25_subset.json" >> "$log" 2>&1
fi
n_dev=$(wc -l < "$OUT/dev_subset.json")
for name in hybrid bm25; do
  python data/evaluate_dureader.py "$OUT/dev_subset.json" "$OUT/${name}_subset.json" > "$OUT/${name}.metrics.json"
done

step "1/3 train the reranker on $RR_MODEL: $RR_TRAIN_QS train questions (0 = all), groups of $GROUP_SIZE, batch $RR_BATCH, pairs <= $MAX_LEN tokens"
t0=$(date +%s)
rm -rf "$OUT/reranker_ckp"
MODEL=$RR_MODEL TRAIN_FILE=$DATA/retrieval_train_data/dual_train.json \
  DEV_FILE=$DATA/retrieval_train_data/dual_dev.json CTX_FILE=$DATA/passages.tsv OUTPUT_DIR=$OUT/reranker_ckp \
  GROUP_SIZE=$GROUP_SIZE Q_LEN=$Q_LEN MAX_LEN=$MAX_LEN BATCH_SIZE=$RR_BATCH LR=$LR EPOCHS=$EPOCHS \
  WARMUP_STEPS=$WARMUP_STEPS DEV_CANDIDATES=$DEPTH MAX_DEV_QUESTIONS=$RR_DEV_QS LOG_BATCH_STEP=4 PRECISION=$PRECISION \
  EXTRA="--max_train_questions $RR_TRAIN_QS --eval_every_steps $EVAL_EVERY --no_progress ${RR_EXTRA:-}" \
  sh run_train_reranker.sh >> "$log" 2>&1
reranker=$(python -m dpr.training.checkpoint "$OUT/reranker_ckp" --reranker)
train_s=$(( $(date +%s) - t0 ))
step "   trained in ${train_s}s: $reranker"

step "2/3 rerank the top $DEPTH of the hybrid and the BM25 runs for $n_dev dev questions (data/rerank.py)"
for name in hybrid bm25; do
  t0=$(date +%s)
  python data/rerank.py --in_file "$OUT/${name}_subset.json" --qa_file "$OUT/dev_subset.json" \
    --ctx_file "$DATA/passages.tsv" --reranker "$reranker" --reranker_depth "$DEPTH" --n_docs 50 \
    --out_file "$OUT/${name}_reranked.json" --precision "${PRECISION:-fp32}" >> "$log" 2>&1
  echo "$(( $(date +%s) - t0 ))" > "$OUT/${name}_reranked.seconds"
done

denoised=""
if [ "$DENOISE" = 1 ]; then
  step "3/3 denoise the training file's BM25 negatives (threshold $DENOISE_THRESHOLD) and train the dense model on them"
  dd=$OUT/denoised_data
  mkdir -p "$dd/retrieval_train_data"
  for f in dev.json passages.tsv collection_meta.json; do [ -e "$DATA/$f" ] && ln -sf "$(cd "$DATA" && pwd)/$f" "$dd/$f"; done
  ln -sf "$(cd "$DATA" && pwd)/retrieval_train_data/dual_dev.json" "$dd/retrieval_train_data/dual_dev.json"
  python data/denoise_negatives.py --in_file "$DATA/retrieval_train_data/dual_train.json" \
    --out_file "$dd/retrieval_train_data/dual_train.json" --reranker "$reranker" \
    --denoise_threshold "$DENOISE_THRESHOLD" --precision "${PRECISION:-fp32}" >> "$log" 2>&1
  DATA=$dd OUT=$OUT/dense_denoised bash bench/recipe_cmrc_cpu.sh >> "$log" 2>&1
  python data/evaluate_dureader.py "$OUT/dev_subset.json" "$OUT/dense_denoised/dense_dev.json" > "$OUT/dense_denoised.metrics.json"
  python data/evaluate_dureader.py "$OUT/dev_subset.json" "$RECIPE_OUT/dense_dev.json" > "$OUT/dense_plain.metrics.json"
  denoised=1
fi

python - "$OUT" "$n_dev" "$DEPTH" "$train_s" "$denoised" "$log" "$RR_BATCH" "$GROUP_SIZE" <<'PY' | tee -a "$log"
import json, re, sys
d, n_dev, depth, train_s, denoised, log, batch, group = sys.argv[1:9]
rows = [("BM25", "bm25", None), ("hybrid (recipe_cmrc_cpu.sh)", "hybrid", None),
        (f"BM25 + reranker (top {depth})", "bm25_reranked", "bm25"),
        (f"hybrid + reranker (top {depth})", "hybrid_reranked", "hybrid")]
if denoised:
    rows += [("dense, plain BM25 negatives", "dense_plain", None), ("dense, denoised negatives", "dense_denoised", None)]
rates = re.findall(r"reranked the top \d+ of \d+ questions: (\d+) pairs in ([\d.]+)s \(([\d.]+) pairs/s", open(log).read())
print(f"CMRC dev, first {n_dev} questions, over all passages; reranker trained in {train_s}s")
print(f"| {'run':<32}| MRR@10 | recall@1 | recall@50 | wall s | pairs/s |")
print(f"|{'-' * 33}|--------|----------|-----------|--------|---------|")
k = 0
for name, stem, seconds in rows:
    m = json.load(open(f"{d}/{stem}.metrics.json"))
    wall, rate = "", ""
    if seconds:
        wall = open(f"{d}/{seconds}_reranked.seconds").read().strip()
        rate = rates[k][2] if k < len(rates) else ""
        k += 1
    print(f"| {name:<32}| {m['MRR@10']:.4f} | {m['recall@1']:.4f}   | {m['recall@50']:.4f}    | {wall:>6} | {rate:>7} |")
steps = [json.loads(x) for x in open(f"{d}/reranker_ckp/train_log.jsonl")]
print("the curve: the reranker's dev MRR@10 (its dev candidates) against training pairs (steps x batch x group):")
for v in (s for s in steps if s["type"] == "validation"):
    print(f"  step {v['step']:>5}  pairs {v['step'] * int(batch) * int(group):>7}  MRR@10 {v['mrr@10']:.4f}")
PY
step "done in $(( $(date +%s) - start ))s; log $log"
