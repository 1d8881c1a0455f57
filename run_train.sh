#!/bin/sh
# Step 2: train the bi-encoder (the reference command; every value can be overridden from the environment,
# e.g. `BATCH_SIZE=256 sh run_train.sh`). Multi-GPU: NPROC=4 sh run_train.sh (torchrun; BATCH_SIZE stays global).
# Several nodes: on every node NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node 0's address> NPROC=8 sh run_train.sh.
set -e

MODEL=${MODEL:-/path/chinese-macbert-base}      # an HF dir, or multilingual-e5-small (built offline)
DATA_DIR=${DATA_DIR:-data/dureader_data/retrieval_train_data}   # what step 1 (data/preprocess_dureader.py) wrote
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/dual_train.json}
DEV_FILE=${DEV_FILE:-}                          # default: $DATA_DIR/dev_with_hn.json if step 1 wrote it, else dual_dev.json
OUTPUT_DIR=${OUTPUT_DIR:-./outputs/macbert_model_ckp}
SEED=${SEED:-12345}
MAX_GRAD_NORM=${MAX_GRAD_NORM:-2.0}
Q_LEN=${Q_LEN:-32}
P_LEN=${P_LEN:-384}
WARMUP_STEPS=${WARMUP_STEPS:-68}
BATCH_SIZE=${BATCH_SIZE:-1024}                  # global: questions per optimizer step over all GPUs
LR=${LR:-3e-05}
EPOCHS=${EPOCHS:-8}
DEV_BATCH_SIZE=${DEV_BATCH_SIZE:-16}
VAL_AV_RANK_START_EPOCH=${VAL_AV_RANK_START_EPOCH:-7}
VAL_AV_RANK_MAX_QS=${VAL_AV_RANK_MAX_QS:-1000}
Q_CHUNK=${Q_CHUNK:-512}                         # gradient-cache chunks: the reference's 512 / 64. Gradients are exact
CTX_CHUNK=${CTX_CHUNK:-64}                      # at any size, but dropout masks are drawn per chunk, so other sizes
                                                # give another run. auto: no flag, sized for the device (CPU 16 / 8;
                                                # CUDA from its memory, README "Keeping the GPU busy")
NUM_WORKERS=${NUM_WORKERS:-}                    # DataLoader workers; empty: the device's default (README "GPUs")
HARD_NEGATIVES=${HARD_NEGATIVES:-4}
OTHER_NEGATIVES=${OTHER_NEGATIVES:-0}
LOG_BATCH_STEP=${LOG_BATCH_STEP:-20}
PRECISION=${PRECISION-auto}                     # auto (fp16 on CUDA, bf16 on CPUs fast at it, else fp32),
                                                # fp16, bf16, fp32; empty = fp32
NPROC=${NPROC:-1}                               # processes (GPUs) per node
NNODES=${NNODES:-1}; NODE_RANK=${NODE_RANK:-0}  # several nodes: the same command on each, NODE_RANK 0..NNODES-1
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}; MASTER_PORT=${MASTER_PORT:-29500}
EXTRA=${EXTRA:-}                                # e.g. "--resume" or "--save_every_steps 20"

# CPU, minutes, on the CMRC2018 mini corpus (python data/build_cmrc2018_retrieval.py, then python
# data/preprocess_dureader.py on it) with the small default encoder: uncomment. Measured: 8 steps + both kinds of
# validation in 21 min wall (8.8 min CPU) on a 2-core machine shared with other jobs; checkpoints are ~1.9 GB each
# (weights + Adam moments of two e5-small towers).
# MODEL=multilingual-e5-small
# DATA_DIR=data/cmrc2018_retrieval/retrieval_train_data
# TRAIN_FILE=$DATA_DIR/dual_train.json
# DEV_FILE=$DATA_DIR/dual_dev.json
# OUTPUT_DIR=./outputs/cmrc_cpu_ckp
# P_LEN=64; BATCH_SIZE=16; Q_CHUNK=8; CTX_CHUNK=8; EPOCHS=2; WARMUP_STEPS=2
# HARD_NEGATIVES=1; DEV_BATCH_SIZE=16; VAL_AV_RANK_START_EPOCH=1; VAL_AV_RANK_MAX_QS=32; LOG_BATCH_STEP=2
# EXTRA="--max_train_questions 64 --max_dev_questions 32 --val_av_rank_hard_neg 4 --val_av_rank_other_neg 0"

fail() { echo "run_train.sh: error: $*" >&2; exit 2; }
case $MODEL in
  /*|./*|../*) [ -d "$MODEL" ] || fail "MODEL=$MODEL is not a directory: set MODEL to a local Hugging Face model dir (e.g. chinese-macbert-base) or MODEL=multilingual-e5-small";;
esac
[ -f "$TRAIN_FILE" ] || fail "TRAIN_FILE=$TRAIN_FILE not found: run step 1 (python data/preprocess_dureader.py) or set DATA_DIR / TRAIN_FILE"
if [ -z "$DEV_FILE" ]; then
  if [ -f "$DATA_DIR/dev_with_hn.json" ]; then DEV_FILE=$DATA_DIR/dev_with_hn.json
  else DEV_FILE=$DATA_DIR/dual_dev.json; fi
  echo "run_train.sh: dev file $DEV_FILE (set DEV_FILE to choose another)" >&2
fi
[ -f "$DEV_FILE" ] || fail "DEV_FILE=$DEV_FILE not found: run step 1 or set DEV_FILE"

CHUNK_FLAGS=
[ "$Q_CHUNK" = auto ] || CHUNK_FLAGS="--q_chunk_size $Q_CHUNK"      # auto: no flag (the flag takes positive integers)
[ "$CTX_CHUNK" = auto ] || CHUNK_FLAGS="$CHUNK_FLAGS --ctx_chunk_size $CTX_CHUNK"

if [ "$NNODES" -gt 1 ]; then
  LAUNCH="torchrun --nnodes $NNODES --node_rank $NODE_RANK --master_addr $MASTER_ADDR --master_port $MASTER_PORT --nproc_per_node $NPROC"
elif [ "$NPROC" -gt 1 ]; then
  LAUNCH="torchrun --nproc_per_node $NPROC"
else
  LAUNCH=python
fi

$LAUNCH train_dense_encoder.py \
  --max_grad_norm $MAX_GRAD_NORM \
  --encoder_model_type hf_bert \
  --pretrained_model_cfg "$MODEL" \
  --seed $SEED \
  --q_sequence_length $Q_LEN \
  --p_sequence_length $P_LEN \
  --warmup_steps $WARMUP_STEPS \
  --batch_size $BATCH_SIZE \
  --do_lower_case \
  --train_file "$TRAIN_FILE" \
  --dev_file "$DEV_FILE" \
  --output_dir "$OUTPUT_DIR" \
  --learning_rate $LR \
  --num_train_epochs $EPOCHS \
  --dev_batch_size $DEV_BATCH_SIZE \
  --val_av_rank_start_epoch $VAL_AV_RANK_START_EPOCH \
  --grad_cache \
  --global_loss_buf_sz 2097152 \
  --val_av_rank_max_qs $VAL_AV_RANK_MAX_QS \
  $CHUNK_FLAGS \
  ${NUM_WORKERS:+--num_workers $NUM_WORKERS} \
  --precision "${PRECISION:-fp32}" \
  --log_batch_step $LOG_BATCH_STEP \
  --hard_negatives $HARD_NEGATIVES \
  --other_negatives $OTHER_NEGATIVES \
  $EXTRA
