#!/usr/bin/env bash
# Quick start on real Chinese data, offline, CPU: CMRC2018 -> DuReader-format mini corpus -> BM25 -> zero-shot
# multilingual-e5-small -> fine-tune it with the gradient cache (run_train.sh) -> encode (run_gen_emb.sh) ->
# retrieve (run_test.sh) -> one table of the official metrics on the held-out questions (CMRC trial split), searched
# among the passages of the held-out paragraphs (SEARCH_SPLITS; "dev test" or "train dev test" for a larger, slower
# collection - encoding runs at ~18 passages/s on 2 cores). Training negatives are mined over the whole collection.
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

data=$DEMO_DIR/data
ckp=$DEMO_DIR/checkpoints
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

step "6/7 results on the held-out questions (CMRC2018 trial split, $(wc -l < "$data/test.json") questions; $(( $(wc -l < "$data/search.tsv") - 1 )) passages searched)"
python - "$DEMO_DIR" "$(basename "$MODEL")" "$HYBRID_ALPHA" <<'PY' | tee -a "$log"
import json, sys
d, model, alpha = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [("BM25 (jieba + bm25s)", f"{d}/bm25_test.metrics.json"),
        (f"{model} zero-shot", f"{d}/zeroshot_test.metrics.json"),
        ("fine-tuned (gradient cache)", f"{d}/finetuned_test.metrics.json"),
        (f"hybrid: fine-tuned + BM25 ({alpha})", f"{d}/hybrid_test.metrics.json")]
print(f"| {'retriever':<34}| MRR@10 | recall@1 | recall@50 |")
print(f"|{'-' * 35}|--------|----------|-----------|")
for name, path in rows:
    m = json.load(open(path))
    print(f"| {name:<34}| {m['MRR@10']:.4f} | {m['recall@1']:.4f}   | {m['recall@50']:.4f}    |")
PY
echo "ask the fine-tuned model (one question; leave out --query for a prompt): python dense_retriever.py --model_file $final --index_dir $DEMO_DIR/emb_finetuned --ctx_file $data/search.tsv --precision ${PRECISION:-fp32} --n_docs 5 --query '北京大学是哪一年成立的？'" | tee -a "$log"
step "7/7 done in $(( $(date +%s) - start ))s; training plot: $(ls "$ckp"/*.png 2>/dev/null | head -n 1); submission: $DEMO_DIR/finetuned_test.json; log: $log"
