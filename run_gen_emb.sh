#!/bin/sh
# Step 3: encode the passage collection with the passage encoder, NUM_SHARDS contiguous shards.
# With GPUs, shards run in parallel, one process per GPU at a time (shard k on GPU k mod #GPUS); without GPUs, one
# after another. Every value can be overridden from the environment, e.g. `NUM_SHARDS=16 GPUS="0 1" sh run_gen_emb.sh`.
# GPUs: $GPUS if set, else the scheduler's CUDA_VISIBLE_DEVICES (only those), else every GPU nvidia-smi lists.
# Re-running skips the shards already complete and made by this same model and settings (each shard's
# .meta.json record is checked before the model loads), so a pre-empted job just runs again.
# Output: $EMB_DIR/emb_shard{k}.npy (+ .ids.txt, .meta.json), read by run_test.sh as "$EMB_DIR/emb_shard*.npy";
# one log per shard in $LOG_DIR/emb_shard{k}.log.
set -e

NUM_SHARDS=${NUM_SHARDS:-8}
SHARD_IDS=${SHARD_IDS:-}                              # e.g. "$SLURM_ARRAY_TASK_ID": only these shards (array jobs)
if [ -z "${GPUS+set}" ]; then                        # "" = CPU
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    GPUS=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' ' ')
  else
    GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr '\n' ' ')
  fi
fi
OUTPUT_DIR=${OUTPUT_DIR:-./outputs/macbert_model_ckp}  # step 2's output dir
MODEL_FILE=${MODEL_FILE:-}                            # default: the best (else newest) checkpoint in $OUTPUT_DIR
CTX_FILE=${CTX_FILE:-./data/dureader_data/passages.tsv}
EMB_DIR=${EMB_DIR:-./outputs/macbert_context_emb}
P_LEN=${P_LEN:-384}
BATCH_SIZE=${BATCH_SIZE:-}                            # per process; empty: the device's default (CPU 128, CUDA
                                                      # sized from its memory); halved automatically on CUDA OOM
PRECISION=${PRECISION-auto}                           # auto, fp16, bf16, fp32; empty = fp32
EXTRA=${EXTRA:-}                                      # e.g. --save_fp16 (half the disk) or --overwrite
LOG_DIR=${LOG_DIR:-$EMB_DIR/logs}

# CPU, CMRC2018 mini corpus (python data/build_cmrc2018_retrieval.py && python data/preprocess_dureader.py
# --input_dir data/cmrc2018_retrieval --output_dir data/cmrc2018_retrieval), zero-shot e5-small: uncomment.
# (Or MODEL_FILE=./outputs/cmrc_cpu_ckp/dpr_biencoder.E.I for the model run_train.sh's CPU block trains.)
# MODEL_FILE=multilingual-e5-small
# CTX_FILE=./data/cmrc2018_retrieval/passages.tsv
# EMB_DIR=./outputs/cmrc_e5_emb
# NUM_SHARDS=2; GPUS=""; P_LEN=256; BATCH_SIZE=32; PRECISION=""

fail() { echo "run_gen_emb.sh: error: $*" >&2; exit 2; }
if [ -z "$MODEL_FILE" ]; then
  MODEL_FILE=$(python -m dpr.training.checkpoint "$OUTPUT_DIR" \
    --hint "$0: set MODEL_FILE (a checkpoint or encoder dir) or OUTPUT_DIR (step 2's output dir)") || exit 2
fi
[ -f "$CTX_FILE" ] || fail "CTX_FILE=$CTX_FILE not found: run step 1 (python data/preprocess_dureader.py) or set CTX_FILE"
mkdir -p "$EMB_DIR" "$LOG_DIR"
encode() {  # encode shard $1 on GPU $2 ("" = CPU), logging to its own file
  log="$LOG_DIR/emb_shard$1.log"
  echo "shard $1 of $NUM_SHARDS on ${2:-CPU}: log in $log"
  if CUDA_VISIBLE_DEVICES=$2 python generate_dense_embeddings.py \
    --model_file "$MODEL_FILE" \
    --ctx_file "$CTX_FILE" \
    --shard_id "$1" \
    --num_shards "$NUM_SHARDS" \
    --out_file "$EMB_DIR/emb" \
    --p_sequence_length "$P_LEN" \
    ${BATCH_SIZE:+--batch_size "$BATCH_SIZE"} \
    --precision "${PRECISION:-fp32}" $EXTRA >"$log" 2>&1; then
    echo "shard $1: done"
  else
    echo "shard $1 failed; the end of $log:" >&2
    tail -n 20 "$log" >&2
    return 1
  fi
}

if [ -n "$SHARD_IDS" ]; then      # a scheduler's array job: these shards, one after another, on the first GPU given
  set -- $GPUS
  for k in $SHARD_IDS; do
    [ "$k" -ge 0 ] 2>/dev/null && [ "$k" -lt "$NUM_SHARDS" ] || fail "SHARD_IDS: $k is not a shard of NUM_SHARDS=$NUM_SHARDS"
  done
  for k in $SHARD_IDS; do encode "$k" "${1:-}" || exit 1; done
elif [ -z "$GPUS" ]; then
  k=0
  while [ "$k" -lt "$NUM_SHARDS" ]; do encode "$k" "" || exit 1; k=$((k + 1)); done
else
  set -- $GPUS
  n_gpus=$#
  pids=""
  i=0
  for gpu in $GPUS; do              # one worker per GPU: shards i, i + n_gpus, i + 2 n_gpus, ...
    (
      k=$i
      status=0
      while [ "$k" -lt "$NUM_SHARDS" ]; do encode "$k" "$gpu" || status=1; k=$((k + n_gpus)); done
      exit $status
    ) &
    pids="$pids $!"
    i=$((i + 1))
  done
  status=0
  for pid in $pids; do wait "$pid" || status=1; done
  [ "$status" -eq 0 ] || { echo "run_gen_emb.sh: a shard failed (see above); re-run to redo only the missing ones" >&2; exit 1; }
fi
ls -l "$EMB_DIR"
