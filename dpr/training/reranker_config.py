"""The reranker's typed training configuration, its flags declared here once as field metadata: train_reranker.py's
parser is generated from `RerankerFlags` (the model flags it takes, `RerankerConfig`, resume and the process group).
Step 2's flag names where they mean the same thing. `RerankerConfig.resolved` fills the device-sized chunk and the
precision once the device and the model are known; the trainer only sees resolved configs."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch

from dpr.models.cross_encoder import CrossEncoderSettings
from dpr.options import (
    DEFAULT_MODEL,
    PAIR_SEQUENCE_LENGTH,
    Q_SEQUENCE_LENGTH,
    non_negative_int,
    positive_float,
    positive_int,
)
from dpr.training.checkpoint import RERANKER_PREFIX
from dpr.utils.device_defaults import ModelShape, device_defaults
from dpr.utils.flags import flag
from dpr.utils.precision import dtype_name, resolve_amp_dtype

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
MODEL, DATA, TRAIN, VAL, CK = "model", "data", "training", "validation", "checkpoints and logging"
BEST_METRIC = "mrr@10"  # reranked MRR@10 of the dev candidates: higher is better


def group_size_arg(value: str) -> int:
    n = int(value)
    if n < 2:
        import argparse

        raise argparse.ArgumentTypeError(f"must be >= 2 (a positive and at least one negative), got {value}")
    return n


@dataclass(frozen=True)
class RerankerConfig:
    """What the reranker trainer reads. Fields declared with `flag` are flags of train_reranker.py; precision comes
    from the shared precision flags (dpr/options.py)."""

    # data
    train_file: str = flag(None, group=DATA, required=True, help=(
        "DPR JSON training file: each question's positive_ctxs and hard_negative_ctxs (step 1's dual_train.json, or "
        "a file written by dense_retriever.py --mine_hard_negatives)."))
    output_dir: str = flag(None, group=TRAIN, required=True, help=(
        "Checkpoints (dpr_reranker.E.I + its .reranker/ directory), train_log.jsonl, training_curves.png."))
    dev_file: str | None = flag(None, group=DATA, help=(
        "DPR JSON dev file whose questions carry negatives (e.g. dev_with_hn.json): validation reranks each "
        "question's positives and listed negatives; the best checkpoint has the highest reranked MRR@10."))
    group_size: int = flag(8, group=DATA, type=group_size_arg, help=(
        "Passages per question in the listwise loss: its positive and group_size-1 negatives from "
        "hard_negative_ctxs (topped up from negative_ctxs, then random passages of the file)."))
    max_train_questions: int = flag(0, group=DATA, type=non_negative_int, help=(
        "Use only the first N questions of --train_file (0: all); for smoke runs."))
    max_dev_questions: int = flag(0, group=DATA, type=non_negative_int, help=(
        "Use only the first N questions of --dev_file (0: all)."))
    dev_run: str | None = flag(None, group=VAL, metavar="RERANK_FILE", help=(
        "For dev questions that list no hard_negative_ctxs (step 1 with --no_bm25): a first-stage run of the dev "
        "questions, dense_retriever.py's .rerank.jsonl written with --ctx_file; its top --dev_candidates passages "
        "(minus positives, by the exclusion rule) are reranked with the positives. Matched by question_id."))
    dev_candidates: int = flag(50, group=VAL, type=group_size_arg, help=(
        "Passages reranked per dev question: its positives, then its listed negatives in file order (the official "
        "metric's depth)."))
    sibling_ids: bool = flag(False, group=DATA, action="store_true", help=(
        "Passage ids are <paragraph>-<k>: never take a passage of a positive's paragraph as a negative. Also on when "
        "collection_meta.json beside --ctx_file says id_scheme paragraph-k."))
    ctx_file: str | None = flag(None, group=DATA, help=(
        "The collection (passages.tsv) the files were made from: only where its collection_meta.json is looked "
        "up."))
    # the pair
    q_sequence_length: int = flag(Q_SEQUENCE_LENGTH, group=MODEL, type=positive_int, help=(
        "Question tokens kept in a pair (special tokens not counted)."))
    max_seq_length: int = flag(PAIR_SEQUENCE_LENGTH, group=MODEL, type=positive_int, help=(
        "Pair length cap: [CLS] question [SEP] passage [SEP]; the passage is cut to fit. Recorded with the model "
        "(sentence-transformers' max_length)."))
    do_lower_case: bool = flag(False, group=MODEL, action="store_true", help=(
        "Lowercase questions and passages before tokenization (recorded with the model)."))
    # optimisation
    batch_size: int = flag(16, group=TRAIN, type=positive_int, help=(
        "GLOBAL batch: questions per optimizer step over all ranks (each brings --group_size pairs); with torchrun "
        "each rank takes batch_size/world_size."))
    learning_rate: float = flag(2e-5, group=TRAIN, type=positive_float, help="Peak AdamW learning rate.")
    num_train_epochs: int = flag(1, group=TRAIN, type=positive_int, help="Passes over --train_file.")
    warmup_steps: int = flag(100, group=TRAIN, type=non_negative_int, help="Linear warmup, then linear decay to 0.")
    max_grad_norm: float = flag(1.0, group=TRAIN, type=float, help="Clip the global gradient norm (<= 0: none).")
    weight_decay: float = flag(0.01, group=TRAIN, type=float, help="AdamW weight decay (biases, LayerNorm: none).")
    adam_eps: float = flag(1e-8, group=TRAIN, type=float, help="AdamW epsilon.")
    seed: int = flag(0, group=TRAIN, type=int, help=(
        "Seeds everything: the new head, epoch order and negatives (from seed, epoch, question)."))
    precision: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    ctx_chunk_size: int | None = flag(None, group=TRAIN, type=positive_int, help=(
        "Pairs per forward/backward pass (whole groups, at least one; gradients accumulate exactly over the "
        "chunks). Default: for the device: 8 on CPU; on CUDA sized from the card's memory and --max_seq_length."))
    freeze_embeddings: bool = flag(False, group=TRAIN, action="store_true", help=(
        "Keep the word-embedding matrix fixed (e5-small: 96M of its 118M parameters): faster CPU steps."))
    attention_dropout: float | None = flag(None, group=TRAIN, type=float, metavar="P", help=(
        "Attention-probability dropout while training (default: the model's). 0 lets torch use its fused kernel."))
    # validation
    dev_batch_size: int = flag(64, group=VAL, type=positive_int, help="Pairs per dev scoring batch.")
    eval_every_steps: int = flag(0, group=VAL, type=non_negative_int, metavar="N", help=(
        "Also validate every N steps within an epoch: points for the log and plot only (0: epoch ends only)."))
    # checkpoints and logging
    checkpoint_file_name: str = flag(RERANKER_PREFIX, group=CK, help="Checkpoint prefix: PREFIX.EPOCH.ITER.")
    keep_checkpoints: int = flag(0, group=CK, type=non_negative_int, metavar="N", help=(
        "Keep only this run's newest N checkpoints plus its best (0: keep all)."))
    save_every_steps: int = flag(0, group=CK, type=non_negative_int, help=(
        "Also checkpoint every N steps within an epoch (0: only at epoch ends)."))
    log_batch_step: int = flag(100, group=CK, type=positive_int, help="Log a line every N steps.")
    progress_bar: bool = flag(True, group=CK, invert="no_progress", help="No tqdm bar.")

    def __post_init__(self) -> None:
        if self.precision not in ("auto", *AMP_DTYPES):
            raise ValueError(f"precision must be one of {('auto', *AMP_DTYPES)}, not {self.precision!r}")

    @property
    def settings(self) -> CrossEncoderSettings:
        """The pair settings recorded with the model."""
        return CrossEncoderSettings(self.max_seq_length, self.q_sequence_length, self.do_lower_case)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.precision]

    def per_rank_batch(self, world_size: int) -> int:
        return math.ceil(self.batch_size / world_size)

    @property
    def groups_per_chunk(self) -> int:
        return max(1, self.ctx_chunk_size // self.group_size)

    def resolved(self, device: torch.device | str, shape: ModelShape | None = None, world_size: int = 1,
                 local_ranks: int = 1) -> RerankerConfig:
        """Precision for `device` and, when unset, the chunk sized for the device (dpr/utils/device_defaults.py,
        the passage chunk of a --max_seq_length sequence). Resolving a resolved config changes nothing."""
        chunk = self.ctx_chunk_size
        if chunk is None:
            sized_for = torch.device(device) if shape is not None else torch.device("cpu")
            chunk = device_defaults(sized_for, shape or ModelShape(0, 0, 0), self.q_sequence_length,
                                    self.max_seq_length, self.per_rank_batch(world_size), self.group_size,
                                    local_ranks=local_ranks).ctx_chunk_size
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(RerankerConfig)}
        return RerankerConfig(**{**values, "ctx_chunk_size": chunk,
                                 "precision": dtype_name(resolve_amp_dtype(device, self.precision))})


@dataclass(frozen=True)
class RerankerFlags(RerankerConfig):
    """train_reranker.py's command line: where the model comes from, RerankerConfig's flags, resume and the
    process group."""

    pretrained_model_cfg: str = flag(DEFAULT_MODEL, group=MODEL, help=(
        "The encoder the cross-encoder starts from (a new one-logit head on top): a local HF or sentence-transformers "
        "directory, a hub name in the local cache, or 'multilingual-e5-small' (built offline; the default)."))
    model_file: str | None = flag(None, group=MODEL, help=(
        "Starting weights instead: a reranker directory (ours or a sentence-transformers CrossEncoder: its head is "
        "kept), or an encoder / bi-encoder checkpoint (its passage tower, a new head). Always a NEW run; to continue "
        "a run, use --resume."))
    resume: bool = flag(False, group=CK, action="store_true", help=(
        "Continue the run in --output_dir from its latest checkpoint (model, optimizer, scheduler, scaler, RNG, data "
        "position, run id); with no checkpoint there yet, start fresh."))
    overwrite_output_dir: bool = flag(False, group=CK, action="store_true", help=(
        "A fresh run refuses an --output_dir holding another run's checkpoints; with this flag it deletes them."))
    dist_timeout_minutes: float = flag(30.0, group=CK, type=positive_float, help=(
        "torchrun: a collective that waits longer than this fails the job."))

    def config(self) -> RerankerConfig:
        """The RerankerConfig part of the flags."""
        return RerankerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RerankerConfig)})
