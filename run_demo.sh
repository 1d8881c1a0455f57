#!/usr/bin/env bash
# Quick start on real Chinese data, offline, CPU: CMRC2018 -> DuReader-format mini corpus -> BM25 -> zero-shot
# multilingual-e5-small -> fine-tune it with the gradient cache (run_train.sh) -> encode (run_gen_emb.sh) ->
# retrieve (run_test.sh) -> one table of the official metrics on the held-out questions (CMRC trial split), searched
# among the passages of the held-out paragraphs (SEARCH_SPLITS; "dev test" or "train dev test" for a larger, slower
# collection - encoding runs at ~18 passages/s on 2 cores). Training negatives are mined over the whole collection.
# RERANK=1 (the default when a CUDA GPU is present) also trains a cross-encoder reranker (run_train_reranker.sh) and
# reranks the hybrid list's top RR_DEPTH with it (run_test.sh RERANKER=...): one more row, with its wall time.
# Every value below can be overridden from the environment (CI runs this at toy size with a tiny random model).
set -euo pipefail
cd "$(dirname "$0")"
start=$(date +%s)

DEMO_DIR=${DEMO_DIR:-./demo_outputs}
MODEL=${MODEL:-multilingual-e5-small}        # the encoder to score zero-shot and to fine-tune
TRAIN_QS=${TRAIN_QS:-1280}                   # CMRC train questions used for fine-tuning
BATCH_SIZE=${BATCH_SIZE:-32}                 # global batch (questions per step)
Q_CHUNK=${Q_CHUNK:-32}; CTX_CHUNK=${CTX_CHUNK:-32}   # gradient-cache chunks
EPOCHS=${EPOCHS:-1}
EVAL_EVERY=${EVAL_EVERY:-10}                 # dev points within the epoch for the plot (40 steps: 3 + the epoch end)
LR=${LR:-3e-05}
TEMPERATURE=${TEMPERATURE:-0.01}
HARD_NEGATIVES=${HARD_NEGATIVES:-1}
Q_LEN=${Q_LEN:-32}
TRAIN_P_LEN=${TRAIN_P_LEN:-128}              # passage cap while training
P_LEN=${P_LEN:-256}                          # passage cap while encoding the collection
ENC_BATCH=${ENC_BATCH:-64}
PRECISION=${PRECISION:-fp32}                 # pinned, so the table repeats; "auto": bf16 on CPUs fast at it
TRAIN_EXTRA=${TRAIN_EXTRA---freeze_embeddings --attention_dropout 0}  # frozen word embeddings (less overfitting), fused attention: faster CPU steps
SEARCH_SPLITS=${SEARCH_SPLITS:-test}         # whose paragraphs form the searched collection
HYBRID_ALPHA=${HYBRID_ALPHA:-0.3}            # hybrid row: weight of the fine-tuned dense score against BM25
GPU=$(python -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
RERANK=${RERANK:-$GPU}                       # 1: train a reranker and add the "hybrid + reranker" row
RR_MODEL=${RR_MODEL:-$MODEL}                 # the encoder under the reranker's new one-logit head
if [ "$GPU" = 1 ]; then RR_QS_DEFAULT=0; RR_BATCH_DEFAULT=32; else RR_QS_DEFAULT=256; RR_BATCH_DEFAULT=8; fi
RR_TRAIN_QS=${RR_TRAIN_QS:-$RR_QS_DEFAULT}   # CMRC train questions for the reranker (0: all; on CPU it is slow)
RR_BATCH=${RR_BATCH:-$RR_BATCH_DEFAULT}      # questions per step (x RR_GROUP_SIZE pairs)
RR_GROUP_SIZE=${RR_GROUP_SIZE:-8}            # positive + 7 BM25 negatives per question (listwise softmax)
RR_MAX_LEN=${RR_MAX_LEN:-192}                # pair cap: question + a 200-character passage fit
RR_EPOCHS=${RR_EPOCHS:-1}
RR_LR=${RR_LR:-3e-05}
RR_DEV_QS=${RR_DEV_QS:-50}                   # dev questions for choosing the checkpoint (their BM25 candidates)
RR_DEPTH=${RR_DEPTH:-20}                     # hybrid passages reranked per held-out question
RR_PRECISION=${RR_PRECISION:-auto}           # fp16 on CUDA, bf16 on CPUs fast at it, else fp32
RR_EXTRA=${RR_EXTRA---attention_dropout 0}   # fused attention: faster steps

data=$DEMO_DIR/data
ckp=$DEMO_DIR/checkpoints
rrckp=$DEMO_DIR/reranker_checkpoints
log=$DEMO_DIR/demo.log
mkdir -p "$DEMO_DIR"
: > "$log"
step() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$log"; }

step "1/7 CMRC2018 -> DuReader-format mini corpus"
cmrc=$(python data/fetch_cmrc2018.py)
python data/build_cmrc2018_retrieval.py --cmrc_dir "$cmrc" --output_dir "$data" >> "$log" 2>&1
python data/preprocess_dureader.py --input_dir "$data" --output_dir "$data" >> "$log" 2>&1
splits=""
for s in $SEARCH_SPLITS; do splits="$splits $data/$s.json"; done
python data/subset_passages.py --ctx_file "$data/passages.tsv" --qa_file $splits --out_file "$data/search.tsv" | tee -a "$log"

step "2/7 BM25 on the held-out questions"
python data/bm25_retriever.py --qa_file "$data/test.json" --ctx_file "$data/search.tsv" \
  --out_file "$DEMO_DIR/bm25_test.json" >> "$log" 2>&1
python data/evaluate_dureader.py "$data/test.json" "$DEMO_DIR/bm25_test.json" > "$DEMO_DIR/bm25_test.metrics.json"

encode_and_search() {  # $1 = model, $2 = name
  step "encode the collection with $2 (run_gen_emb.sh)"
  MODEL_FILE=$1 CTX_FILE=$data/search.tsv EMB_DIR=$DEMO_DIR/emb_$2 NUM_SHARDS=1 GPUS="" P_LEN=$P_LEN \
    BATCH_SIZE=$ENC_BATCH PRECISION=$PRECISION sh run_gen_emb.sh >> "$log" 2>&1
  step "retrieve the held-out questions with $2 (run_test.sh)"
  MODEL_FILE=$1 QA_FILE=$data/test.json CTX_FILE=$data/search.tsv EMB_DIR=$DEMO_DIR/emb_$2 \
    OUT_FILE=$DEMO_DIR/$2_test.json Q_LEN=$Q_LEN BATCH_SIZE=$ENC_BATCH PRECISION=$PRECISION \
    sh run_test.sh >> "$log" 2>&1
}

step "3/7 zero-shot $MODEL"
encode_and_search "$MODEL" zeroshot

step "4/7 fine-tune $MODEL on $TRAIN_QS CMRC train questions (run_train.sh, gradient cache on)"
rm -rf "$ckp"
MODEL=$MODEL TRAIN_FILE=$data/retrieval_train_data/dual_train.json DEV_FILE=$data/retrieval_train_data/dual_dev.json \
  OUTPUT_DIR=$ckp Q_LEN=$Q_LEN P_LEN=$TRAIN_P_LEN BATCH_SIZE=$BATCH_SIZE Q_CHUNK=$Q_CHUNK CTX_CHUNK=$CTX_CHUNK \
  EPOCHS=$EPOCHS WARMUP_STEPS=${WARMUP_STEPS:-5} LR=$LR HARD_NEGATIVES=$HARD_NEGATIVES VAL_AV_RANK_START_EPOCH=0 \
  VAL_AV_RANK_MAX_QS=${VAL_AV_RANK_MAX_QS:-100} LOG_BATCH_STEP=10 PRECISION=$PRECISION \
  EXTRA="--max_train_questions $TRAIN_QS --max_dev_questions ${DEV_QS:-100} --val_av_rank_hard_neg 4 --val_av_rank_other_neg 0 --shared_encoder --similarity cosine --temperature $TEMPERATURE --eval_every_steps $EVAL_EVERY --no_progress ${TRAIN_EXTRA:-}" \
  sh run_train.sh >> "$log" 2>&1
final=$(ls -d "$ckp"/dpr_biencoder.*.question_encoder | sed 's/\.question_encoder$//' | sort -t. -k2,2n -k3,3n | tail -n 1)

step "5/7 fine-tuned model: $final"
encode_and_search "$final" finetuned
step "hybrid: fine-tuned + BM25, alpha $HYBRID_ALPHA (run_test.sh)"
MODEL_FILE=$final QA_FILE=$data/test.json CTX_FILE=$data/search.tsv EMB_DIR=$DEMO_DIR/emb_finetuned \
  OUT_FILE=$DEMO_DIR/hybrid_test.json Q_LEN=$Q_LEN BATCH_SIZE=$ENC_BATCH PRECISION=$PRECISION \
  HYBRID_ALPHA=$HYBRID_ALPHA sh run_test.sh >> "$log" 2>&1

rr_train_s=""; rr_rerank_s=""; reranker=""
if [ "$RERANK" = 1 ]; then
  step "reranker: train a cross-encoder on $RR_MODEL over $RR_TRAIN_QS CMRC train questions (run_train_reranker.sh; 0 = all)"
  rr_start=$(date +%s)
  rm -rf "$rrckp"
  MODEL=$RR_MODEL TRAIN_FILE=$data/retrieval_train_data/dual_train.json \
    DEV_FILE=$data/retrieval_train_data/dual_dev.json CTX_FILE=$data/passages.tsv OUTPUT_DIR=$rrckp \
    GROUP_SIZE=$RR_GROUP_SIZE Q_LEN=$Q_LEN MAX_LEN=$RR_MAX_LEN BATCH_SIZE=$RR_BATCH LR=$RR_LR EPOCHS=$RR_EPOCHS \
    WARMUP_STEPS=${RR_WARMUP_STEPS:-5} DEV_CANDIDATES=$RR_DEPTH MAX_DEV_QUESTIONS=$RR_DEV_QS LOG_BATCH_STEP=10 \
    PRECISION=$RR_PRECISION EXTRA="--max_train_questions $RR_TRAIN_QS --no_progress ${RR_EXTRA:-}" \
    sh run_train_reranker.sh >> "$log" 2>&1
  reranker=$(python -m dpr.training.checkpoint "$rrckp" --reranker)
  rr_trained=$(date +%s)
  rr_train_s=$(( rr_trained - rr_start ))
  step "reranker: rerank the hybrid top $RR_DEPTH with $reranker (run_test.sh RERANKER=...)"
  MODEL_FILE=$final QA_FILE=$data/test.json CTX_FILE=$data/search.tsv EMB_DIR=$DEMO_DIR/emb_finetuned \
    OUT_FILE=$DEMO_DIR/hybrid_rerank_test.json Q_LEN=$Q_LEN BATCH_SIZE=$ENC_BATCH PRECISION=$PRECISION \
    HYBRID_ALPHA=$HYBRID_ALPHA RERANKER=$reranker RERANKER_DEPTH=$RR_DEPTH sh run_test.sh >> "$log" 2>&1
  rr_rerank_s=$(( $(date +%s) - rr_trained ))
fi

step "6/7 results on the held-out questions (CMRC2018 trial split, $(wc -l < "$data/test.json") questions; $(( $(wc -l < "$data/search.tsv") - 1 )) passages searched)"
python - "$DEMO_DIR" "$(basename "$MODEL")" "$HYBRID_ALPHA" "$RERANK" "$RR_DEPTH" "$rr_train_s" "$rr_rerank_s" \
  "$RR_TRAIN_QS" "$(wc -l < "$data/test.json")" <<'PY' | tee -a "$log"
import json, sys
d, model, alpha, rerank, depth, train_s, rerank_s, train_qs, n_test = sys.argv[1:10]
rows = [("BM25 (jieba + bm25s)", f"{d}/bm25_test.metrics.json"),
        (f"{model} zero-shot", f"{d}/zeroshot_test.metrics.json"),
        ("fine-tuned (gradient cache)", f"{d}/finetuned_test.metrics.json"),
        (f"hybrid: fine-tuned + BM25 ({alpha})", f"{d}/hybrid_test.metrics.json")]
if rerank == "1":
    rows.append((f"hybrid + reranker (top {depth})", f"{d}/hybrid_rerank_test.metrics.json"))
print(f"| {'retriever':<34}| MRR@10 | recall@1 | recall@50 |")
print(f"|{'-' * 35}|--------|----------|-----------|")
for name, path in rows:
    m = json.load(open(path))
    print(f"| {name:<34}| {m['MRR@10']:.4f} | {m['recall@1']:.4f}   | {m['recall@50']:.4f}    |")
if rerank == "1":
    pairs = int(n_test) * int(depth)
    print(f"reranker wall time: {int(train_s) + int(rerank_s)}s = training {train_s}s "
          f"({train_qs if train_qs != '0' else 'all'} train questions) + reranking {rerank_s}s "
          f"(top {depth} of {n_test} questions, up to {pairs} pairs, with the step's search)")
PY
echo "ask the fine-tuned model (one question; leave out --query for a prompt): python dense_retriever.py --model_file $final --index_dir $DEMO_DIR/emb_finetuned --ctx_file $data/search.tsv --precision ${PRECISION:-fp32} --n_docs 5 --query '北京大学是哪一年成立的？'" | tee -a "$log"
if [ "$RERANK" = 1 ]; then
  echo "ask with the reranker: python dense_retriever.py --model_file $final --index_dir $DEMO_DIR/emb_finetuned --ctx_file $data/search.tsv --precision ${PRECISION:-fp32} --hybrid_alpha $HYBRID_ALPHA --reranker $reranker --reranker_depth $RR_DEPTH --n_docs 5 --query '北京大学是哪一年成立的？'" | tee -a "$log"
fi
step "7/7 done in $(( $(date +%s) - start ))s; training plot: $(ls "$ckp"/*.png 2>/dev/null | head -n 1); submission: $DEMO_DIR/finetuned_test.json; log: $log"
