#!/bin/sh
# Optional step 2b: train the cross-encoder reranker that step 4 can put over the retrieved top k (every value can be
# overridden from the environment, e.g. `GROUP_SIZE=16 sh run_train_reranker.sh`). Multi-GPU: NPROC=4 sh
# run_train_reranker.sh (torchrun; BATCH_SIZE stays global). Several nodes: as run_train.sh (NNODES, NODE_RANK,
# MASTER_ADDR). The chosen reranker directory: python -m dpr.training.checkpoint "$OUTPUT_DIR" --reranker
set -e

MODEL=${MODEL:-/path/chinese-macbert-base}      # the encoder the reranker starts from (a new head on top), an HF
                                                # dir, or multilingual-e5-small (built offline)
DATA_DIR=${DATA_DIR:-data/dureader_data/retrieval_train_data}   # what step 1 (data/preprocess_dureader.py) wrote
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/dual_train.json}   # its hard_negative_ctxs are the negatives (step 1's BM25 ones,
                                                # or a dense_retriever.py --mine_hard_negatives file)
DEV_FILE=${DEV_FILE-$DATA_DIR/dev_with_hn.json}   # dev questions with negatives (step 1's --dev_topk); DEV_FILE= : none
CTX_FILE=${CTX_FILE:-}                          # passages.tsv: its collection_meta.json turns on the sibling rule
OUTPUT_DIR=${OUTPUT_DIR:-./outputs/reranker_ckp}
SEED=${SEED:-12345}
GROUP_SIZE=${GROUP_SIZE:-8}                     # passages per question: its positive + GROUP_SIZE-1 negatives
Q_LEN=${Q_LEN:-32}                              # question tokens kept in a pair
MAX_LEN=${MAX_LEN:-384}                         # pair cap ([CLS] q [SEP] p [SEP]); the passage is cut to fit
BATCH_SIZE=${BATCH_SIZE:-64}                    # global: questions per optimizer step (x GROUP_SIZE pairs)
LR=${LR:-2e-05}
EPOCHS=${EPOCHS:-2}
WARMUP_STEPS=${WARMUP_STEPS:-100}
MAX_GRAD_NORM=${MAX_GRAD_NORM:-1.0}
DEV_CANDIDATES=${DEV_CANDIDATES:-50}            # passages reranked per dev question (the official metric's depth)
MAX_DEV_QUESTIONS=${MAX_DEV_QUESTIONS:-1000}
CTX_CHUNK=${CTX_CHUNK:-}                        # pairs per forward pass; empty: the device's default
LOG_BATCH_STEP=${LOG_BATCH_STEP:-20}
PRECISION=${PRECISION-auto}                     # auto (fp16 on CUDA, bf16 on CPUs fast at it, else fp32),
                                                # fp16, bf16, fp32; empty = fp32
NPROC=${NPROC:-1}
NNODES=${NNODES:-1}; NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}; MASTER_PORT=${MASTER_PORT:-29500}
EXTRA=${EXTRA:-}                                # e.g. "--resume", "--save_every_steps 200", "--sibling_ids"

# CPU, minutes, on the CMRC2018 mini corpus with the small default encoder: uncomment (bench/ has the measured cost).
# MODEL=multilingual-e5-small
# DATA_DIR=data/cmrc2018_retrieval/retrieval_train_data
# DEV_FILE=$DATA_DIR/dev_with_hn.json
# OUTPUT_DIR=./outputs/cmrc_cpu_reranker
# MAX_LEN=192; BATCH_SIZE=8; EPOCHS=1; WARMUP_STEPS=4; MAX_DEV_QUESTIONS=100; DEV_CANDIDATES=20; LOG_BATCH_STEP=2
# EXTRA="--max_train_questions 64 --attention_dropout 0"

fail() { echo "run_train_reranker.sh: error: $*" >&2; exit 2; }
case $MODEL in
  /*|./*|../*) [ -d "$MODEL" ] || fail "MODEL=$MODEL is not a directory: set MODEL to a local Hugging Face model dir (e.g. chinese-macbert-base) or MODEL=multilingual-e5-small";;
esac
[ -f "$TRAIN_FILE" ] || fail "TRAIN_FILE=$TRAIN_FILE not found: run step 1 (python data/preprocess_dureader.py) or set DATA_DIR / TRAIN_FILE"
if [ -n "$DEV_FILE" ] && [ ! -f "$DEV_FILE" ]; then
  fail "DEV_FILE=$DEV_FILE not found: run step 1 with --dev_topk, set DEV_FILE, or DEV_FILE= for no validation"
fi

if [ "$NNODES" -gt 1 ]; then
  LAUNCH="torchrun --nnodes $NNODES --node_rank $NODE_RANK --master_addr $MASTER_ADDR --master_port $MASTER_PORT --nproc_per_node $NPROC"
elif [ "$NPROC" -gt 1 ]; then
  LAUNCH="torchrun --nproc_per_node $NPROC"
else
  LAUNCH=python
fi

$LAUNCH train_reranker.py \
  --pretrained_model_cfg "$MODEL" \
  --train_file "$TRAIN_FILE" \
  ${DEV_FILE:+--dev_file "$DEV_FILE"} \
  ${CTX_FILE:+--ctx_file "$CTX_FILE"} \
  --output_dir "$OUTPUT_DIR" \
  --seed $SEED \
  --group_size $GROUP_SIZE \
  --q_sequence_length $Q_LEN \
  --max_seq_length $MAX_LEN \
  --batch_size $BATCH_SIZE \
  --learning_rate $LR \
  --num_train_epochs $EPOCHS \
  --warmup_steps $WARMUP_STEPS \
  --max_grad_norm $MAX_GRAD_NORM \
  --dev_candidates $DEV_CANDIDATES \
  --max_dev_questions $MAX_DEV_QUESTIONS \
  ${CTX_CHUNK:+--ctx_chunk_size $CTX_CHUNK} \
  --log_batch_step $LOG_BATCH_STEP \
  --precision "${PRECISION:-fp32}" \
  $EXTRA
