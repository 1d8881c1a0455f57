#!/bin/sh
# Step 4: encode the questions, search the passage embeddings, write the official submission {qid: [50 pids]},
# a rerank file (pids, texts, scores) and, when the questions carry labels (dev), the official metrics.
# Every value can be overridden from the environment, e.g. `QA_FILE=data/dureader_data/test1.json sh run_test.sh`.
set -e

OUTPUT_DIR=${OUTPUT_DIR:-./outputs/macbert_model_ckp}  # step 2's output dir
MODEL_FILE=${MODEL_FILE:-}                            # default: the best (else newest) checkpoint in $OUTPUT_DIR
QA_FILE=${QA_FILE:-}                                  # release JSON (dev/test1/test2), DPR JSON, or qid\tquestion TSV;
                                                      # default: step 1's dev questions (see below)
CTX_FILE=${CTX_FILE:-./data/dureader_data/passages.tsv}
EMB_DIR=${EMB_DIR:-./outputs/macbert_context_emb}
OUT_FILE=${OUT_FILE:-./outputs/dev_res.json}          # + dev_res.rerank.jsonl, dev_res.metrics.json beside it
N_DOCS=${N_DOCS:-50}
Q_LEN=${Q_LEN:-32}
BATCH_SIZE=${BATCH_SIZE:-128}
INDEX=${INDEX:---index_type flat}                     # exact; or "--index_type hnsw", "--index_type ivfpq",
                                                      # "--index_factory IVF65536,PQ64np"
SEARCH_SHARD_SIZE=${SEARCH_SHARD_SIZE:-}              # e.g. 2000000: search that many vectors at a time (bounded RAM)
PRECISION=${PRECISION-auto}                           # auto, fp16, bf16, fp32; empty = fp32
HYBRID_ALPHA=${HYBRID_ALPHA:-}                        # e.g. 0.5: dense + BM25 (over CTX_FILE) fused, A = dense weight;
                                                      # empty = dense only (EXTRA="--fusion rrf" for rank fusion)
RERANKER=${RERANKER:-}                                # a reranker dir (run_train_reranker.sh): rerank the top
RERANKER_DEPTH=${RERANKER_DEPTH:-}                    # RERANKER_DEPTH (default 50) of the dense / hybrid list
RERANKER_BATCH_SIZE=${RERANKER_BATCH_SIZE:-}          # pairs per forward pass (default: the device's)
EXTRA=${EXTRA:-}                                      # e.g. "--faiss_fp16", or the reference setup's two-step way:
# encode on a GPU machine: EXTRA="--q_encoding_path q.npy --encode_q_and_save"; then search on a CPU machine
# with EXTRA="--q_encoding_path q.npy" (the model is not loaded when the saved vectors match the questions).

# CPU, CMRC2018 mini corpus, zero-shot e5-small (after run_gen_emb.sh's CPU block): uncomment.
# MODEL_FILE=multilingual-e5-small
# QA_FILE=./data/cmrc2018_retrieval/dev.json
# CTX_FILE=./data/cmrc2018_retrieval/passages.tsv
# EMB_DIR=./outputs/cmrc_e5_emb
# OUT_FILE=./outputs/cmrc_e5_dev_res.json
# BATCH_SIZE=64; PRECISION=""

fail() { echo "run_test.sh: error: $*" >&2; exit 2; }
if [ -z "$MODEL_FILE" ]; then
  MODEL_FILE=$(python -m dpr.training.checkpoint "$OUTPUT_DIR" \
    --hint "$0: set MODEL_FILE (a checkpoint or encoder dir) or OUTPUT_DIR (step 2's output dir)") || exit 2
fi
if [ -z "$QA_FILE" ]; then  # the release's dev.json, else the baseline layout's, else step 1's DPR dev file
  for f in ./data/dureader_data/dev.json ./data/dureader_data/dureader-retrieval-baseline-dataset/dev/dev.json \
           ./data/dureader_data/retrieval_train_data/dual_dev.json; do
    if [ -f "$f" ]; then QA_FILE=$f; break; fi
  done
  [ -n "$QA_FILE" ] || fail "no dev questions found: run step 1 (python data/preprocess_dureader.py) or set QA_FILE"
  echo "run_test.sh: questions from $QA_FILE (set QA_FILE to choose another)" >&2
fi
[ -f "$QA_FILE" ] || fail "QA_FILE=$QA_FILE not found"
[ -f "$CTX_FILE" ] || fail "CTX_FILE=$CTX_FILE not found: run step 1 or set CTX_FILE"
[ -z "$RERANKER" ] || [ -d "$RERANKER" ] || fail "RERANKER=$RERANKER is not a directory: train one (sh run_train_reranker.sh) or unset RERANKER"
ls $EMB_DIR/emb_shard*.npy > /dev/null 2>&1 || fail "no embeddings in EMB_DIR=$EMB_DIR: run step 3 (sh run_gen_emb.sh) or set EMB_DIR"

python dense_retriever.py \
  --model_file "$MODEL_FILE" \
  --qa_file "$QA_FILE" \
  --ctx_file "$CTX_FILE" \
  --encoded_ctx_file "$EMB_DIR/emb_shard*.npy" \
  --out_file "$OUT_FILE" \
  --n_docs "$N_DOCS" \
  --q_sequence_length "$Q_LEN" \
  --batch_size "$BATCH_SIZE" \
  ${SEARCH_SHARD_SIZE:+--search_shard_size "$SEARCH_SHARD_SIZE"} \
  ${HYBRID_ALPHA:+--hybrid_alpha "$HYBRID_ALPHA"} \
  ${RERANKER:+--reranker "$RERANKER"} \
  ${RERANKER_DEPTH:+--reranker_depth "$RERANKER_DEPTH"} \
  ${RERANKER_BATCH_SIZE:+--reranker_batch_size "$RERANKER_BATCH_SIZE"} \
  --precision "${PRECISION:-fp32}" $INDEX $EXTRA
