"""The typed training configuration, its flags declared here once as field metadata (dpr/utils/flags.py):
train_dense_encoder.py's parser is generated from `TrainFlags` (the model flags, `TrainConfig`, and what the script
itself does: towers, resume, process group) and returns one. The values left to the run (precision "auto",
similarity, temperature, the device-sized chunks / workers / encoding batch) stay None until `TrainConfig.resolved`,
the one step that works them out once the device and the model are known; the trainer only sees resolved configs.
Every derived value (temperature, per-rank batch, chunk sizes, sampling) is worked out here only."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch

from dpr.options import (
    P_SEQUENCE_LENGTH,
    Q_SEQUENCE_LENGTH,
    ModelFlags,
    non_negative_int,
    positive_float,
    positive_int,
)
from dpr.training.checkpoint import PREFIX
from dpr.training.data import SamplingConfig
from dpr.utils.device_defaults import ModelShape, device_defaults, resolve
from dpr.utils.flags import flag
from dpr.utils.precision import dtype_name, resolve_amp_dtype

Similarity = Literal["dot", "cosine"]
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
# the fields sized for the device when left unset -> their name in dpr.utils.device_defaults.DeviceDefaults
DEVICE_SIZED = {"q_chunk_size": "q_chunk_size", "ctx_chunk_size": "ctx_chunk_size", "num_workers": "num_workers",
                "val_av_rank_bsz": "encode_batch"}
DATA, TRAIN, GC, VAL, CK = "data", "training", "gradient cache", "validation", "checkpoints and logging"


def default_temperature(similarity: Similarity) -> float:
    """Cosine scores live in [-1, 1] and need sharpening; dot products do not."""
    return 0.01 if similarity == "cosine" else 1.0


@dataclass(frozen=True)
class TrainConfig:
    """What the trainer reads. A field declared with `flag` is a flag of train_dense_encoder.py; precision and the
    lengths come from the shared flags (dpr/options.py)."""

    # data
    train_file: str = flag(None, group=DATA, required=True, help="DPR JSON training file (e.g. dual_train.json).")
    output_dir: str = flag(None, group=TRAIN, required=True, help=(
        "Checkpoints, train_log.jsonl and training_curves.png go here."))
    dev_file: str | None = flag(None, group=DATA, help="DPR JSON dev file with negatives (e.g. dev_with_hn.json).")
    hard_negatives: int = flag(1, group=DATA, type=non_negative_int, help=(
        "Hard negatives per question, sampled from hard_negative_ctxs (topped up from negative_ctxs)."))
    other_negatives: int = flag(0, group=DATA, type=non_negative_int, help=(
        "Other negatives per question, sampled from negative_ctxs (topped up from hard_negative_ctxs)."))
    shuffle_positive_ctx: bool = flag(False, group=DATA, action="store_true", help=(
        "Train each question on a random one of its positives each epoch (drawn from seed, epoch, question). "
        "Default: always its first positive, as DPR. Negatives vary per epoch either way."))
    max_train_questions: int = flag(0, group=DATA, type=non_negative_int, help=(
        "Use only the first N questions of --train_file (0: all); for smoke runs."))
    max_dev_questions: int = flag(0, group=DATA, type=non_negative_int, help=(
        "Use only the first N questions of --dev_file (0: all)."))
    num_workers: int | None = flag(None, group=DATA, type=non_negative_int, help=(  # resolved: device-sized
        "DataLoader workers that sample, tokenize and pad batches (default: for the device: 2 on CPU; on CUDA half "
        "the cores per GPU process, 2 to 8)."))
    q_sequence_length: int = Q_SEQUENCE_LENGTH
    p_sequence_length: int = P_SEQUENCE_LENGTH
    # optimisation
    batch_size: int = flag(2, group=TRAIN, type=positive_int, help=(
        "GLOBAL batch: questions per optimizer step over all ranks; with torchrun each rank takes "
        "batch_size/world_size. Every question is scored against every passage of the global batch (questions and "
        "passages are gathered from all ranks)."))
    learning_rate: float = flag(1e-5, group=TRAIN, type=positive_float, help="Peak AdamW learning rate.")
    num_train_epochs: int = flag(3, group=TRAIN, type=positive_int, help="Passes over --train_file.")
    warmup_steps: int = flag(100, group=TRAIN, type=non_negative_int, help="Linear warmup, then linear decay to 0.")
    max_grad_norm: float = flag(1.0, group=TRAIN, type=float, help=(
        "Clip the global gradient norm (<= 0: no clipping)."))
    weight_decay: float = flag(0.0, group=TRAIN, type=float, help="AdamW weight decay (biases and LayerNorm: none).")
    adam_eps: float = flag(1e-8, group=TRAIN, type=float, help="AdamW epsilon.")
    seed: int = flag(0, group=TRAIN, type=int, help=(
        "Seeds everything; epoch order and negatives come from seed+epoch."))
    similarity: Similarity | None = flag(None, group=TRAIN, choices=["dot", "cosine"], help=(  # resolved
        "Score function (default: cosine for encoders that L2-normalise, e.g. e5; dot otherwise). cosine makes the "
        "saved encoders normalise their output."))
    temperature: float | None = flag(None, group=TRAIN, type=positive_float, help=(  # resolved
        "Scores are divided by this (default: 0.01 for cosine, 1.0 for dot)."))
    precision: Literal["auto", "fp16", "bf16", "fp32"] = "auto"  # resolved for this run's device
    # gradient cache
    grad_cache: bool = flag(False, group=GC, action="store_true", help=(
        "Exact gradient caching: encode in chunks without a graph, then re-encode chunk by chunk (same dropout) to "
        "backpropagate. Same gradients as without, memory of one chunk."))
    q_chunk_size: int | None = flag(None, group=GC, type=positive_int, help=(  # resolved: device-sized
        "Questions per chunk with --grad_cache (a chunk larger than the per-rank batch is one chunk). Default: for "
        "the device: 16 on CPU; on CUDA sized from the card's memory, the model and --q_sequence_length "
        "(dpr/utils/device_defaults.py; the log says what was chosen)."))
    ctx_chunk_size: int | None = flag(None, group=GC, type=positive_int, help=(  # resolved: device-sized
        "Passages per chunk with --grad_cache. Default: for the device: 8 on CPU; on CUDA sized as --q_chunk_size "
        "is, for --p_sequence_length."))
    # validation
    dev_batch_size: int = flag(4, group=VAL, type=positive_int, help="Questions per in-batch NLL dev batch.")
    val_av_rank_start_epoch: int = flag(10000, group=VAL, type=non_negative_int, help=(
        "From this (0-based) epoch on, validate with DPR's average rank instead of in-batch NLL."))
    val_av_rank_max_qs: int = flag(10000, group=VAL, type=positive_int, help="Dev questions in average rank.")
    val_av_rank_hard_neg: int = flag(30, group=VAL, type=non_negative_int, help="Hard negatives per question.")
    val_av_rank_other_neg: int = flag(30, group=VAL, type=non_negative_int, help="Other negatives per question.")
    val_av_rank_bsz: int | None = flag(None, group=VAL, type=positive_int, help=(  # resolved: device-sized
        "Encoding batch for average rank (default: for the device: 128 on CPU; on CUDA sized from the card's "
        "memory)."))
    # checkpoints and logging
    checkpoint_file_name: str = flag(PREFIX, group=CK, help="Checkpoint prefix: PREFIX.EPOCH.ITER.")
    keep_checkpoints: int = flag(0, group=CK, type=non_negative_int, metavar="N", help=(
        "Keep only this run's newest N checkpoints plus its best (0: keep all). Another run's files are never "
        "deleted."))
    save_every_steps: int = flag(0, group=CK, type=non_negative_int, help=(
        "Also checkpoint every N steps within an epoch (0: only at epoch ends)."))
    eval_every_steps: int = flag(0, group=CK, type=non_negative_int, metavar="N", help=(
        "Also validate every N steps within an epoch, with the best-record metric: points for the log and "
        "training_curves.png only (no checkpoint, not in the best record). 0: epoch ends only."))
    log_batch_step: int = flag(100, group=CK, type=positive_int, help="Log a line every N steps.")
    progress_bar: bool = flag(True, group=CK, invert="no_progress", help="No tqdm bar.")

    def __post_init__(self) -> None:
        if self.similarity not in (None, "dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', not {self.similarity!r}")
        if self.precision not in ("auto", *AMP_DTYPES):
            raise ValueError(f"precision must be one of {('auto', *AMP_DTYPES)}, not {self.precision!r}")

    def resolved(self, device: torch.device | str, normalize: bool, shape: ModelShape | None = None,
                 world_size: int = 1, local_ranks: int = 1) -> TrainConfig:
        """The TrainConfig the trainer runs: precision for `device`, similarity from the towers when not given
        (cosine iff they `normalize`), temperature from the similarity, and each device-sized field left unset from
        dpr/utils/device_defaults.py (for the model's `shape` on `device`; without a shape, the CPU values).
        Resolving a resolved config changes nothing."""
        similarity = self.similarity or ("cosine" if normalize else "dot")
        given = {DEVICE_SIZED[name]: getattr(self, name) for name in DEVICE_SIZED}
        sized = given
        if None in given.values():
            sized_for = torch.device(device) if shape is not None else torch.device("cpu")
            defaults = device_defaults(sized_for, shape or ModelShape(0, 0, 0), self.q_sequence_length,
                                       self.p_sequence_length, self.per_rank_batch(world_size),
                                       self.sampling.passages_per_question, local_ranks=local_ranks)
            sized, _ = resolve(given, defaults)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig) if f.init}
        return TrainConfig(**{
            **values, **{name: sized[key] for name, key in DEVICE_SIZED.items()}, "similarity": similarity,
            "temperature": default_temperature(similarity) if self.temperature is None else self.temperature,
            "precision": dtype_name(resolve_amp_dtype(device, self.precision))})

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES[self.precision]

    @property
    def sampling(self) -> SamplingConfig:
        """Training: negatives vary by (seed, epoch, question); the positive is the first unless shuffled."""
        return SamplingConfig(self.hard_negatives, self.other_negatives, True, self.seed, self.shuffle_positive_ctx)

    @property
    def dev_sampling(self) -> SamplingConfig:
        """In-batch NLL validation: the first positive and the first negatives of each pool, every epoch."""
        return SamplingConfig(self.hard_negatives, self.other_negatives, False, self.seed, False)

    @property
    def best_metric(self) -> str:
        """The one metric the best record selects on, computed at every epoch end: DPR's average rank when it is
        asked for from the first epoch (--val_av_rank_start_epoch 0), else the in-batch NLL (a metric that starts
        late could only ever pick from its own epochs)."""
        return "average_rank" if self.val_av_rank_start_epoch == 0 else "nll"

    def validation_metrics(self, epoch: int) -> tuple[str, ...]:
        """What an epoch end computes: the best metric, plus average rank from --val_av_rank_start_epoch on."""
        if self.best_metric == "nll" and epoch >= self.val_av_rank_start_epoch:
            return ("nll", "average_rank")
        return (self.best_metric,)

    def per_rank_batch(self, world_size: int) -> int:
        """Questions per rank (the largest share of the global batch)."""
        return math.ceil(self.batch_size / world_size)

    def chunk_sizes(self, world_size: int) -> tuple[int, int]:
        """(questions, passages) per encoder forward: the cache's chunks, or the rank's whole share without it."""
        if self.grad_cache:
            return self.q_chunk_size, self.ctx_chunk_size
        local = self.per_rank_batch(world_size)
        return local, local * self.sampling.passages_per_question


@dataclass(frozen=True)
class TrainFlags(TrainConfig, ModelFlags):
    """train_dense_encoder.py's command line: the model flags, TrainConfig's, and the script's own (how the towers
    are loaded, resume, the process group). `resolved` gives the TrainConfig of the run."""

    model_file: str | None = flag(None, group="model", help=(  # the shared flag, as training reads it
        "Starting weights: an HF encoder dir, a question_encoder/ + passage_encoder/ dir, or a checkpoint "
        "dpr_biencoder.E.I of another run (its towers only). Always a NEW run: its own schedule, optimizer and "
        "--output_dir. To continue a run, use --resume."))
    shared_encoder: bool = flag(False, group=TRAIN, action="store_true", help="One tower for questions and passages.")
    gradient_checkpointing: bool = flag(False, group=TRAIN, action="store_true", help=(
        "Recompute activations in backward."))
    freeze_embeddings: bool = flag(False, group=TRAIN, action="store_true", help=(
        "Keep the word-embedding matrix fixed (e5-small: 96M of its 118M parameters). Much faster steps on CPU and a "
        "smaller checkpoint; useful when fine-tuning on little data."))
    attention_dropout: float | None = flag(None, group=TRAIN, type=float, metavar="P", help=(
        "Attention-probability dropout while training (default: the model's, 0.1 for BERT/e5). 0 lets torch use its "
        "fused attention kernel: faster CPU steps (measured, with its effect on accuracy, in docs/benchmarks.md, "
        "bf16 on CPUs)."))
    global_loss_buf_sz: int | None = flag(None, group=GC, type=int, help=(
        "Accepted for compatibility, no effect (DPR/GC-DPR's pickle buffer size; representations are gathered with "
        "all_gather here)."))
    resume: bool = flag(False, group=CK, action="store_true", help=(
        "Continue the run in --output_dir from its latest checkpoint (model, optimizer, scheduler, scaler, RNG, data "
        "position, run id); with no checkpoint there yet, start fresh. A run that had already finished: nothing to "
        "do. --model_file never resumes: it gives starting weights."))
    overwrite_output_dir: bool = flag(False, group=CK, action="store_true", help=(
        "A fresh run (no --resume) refuses an --output_dir holding another run's checkpoints; with this flag it "
        "deletes them (and that run's best_checkpoint.json) first."))
    dist_timeout_minutes: float = flag(30.0, group=CK, type=positive_float, help=(
        "torchrun: a collective that waits longer than this fails the job (e.g. every other rank waiting for a rank "
        "0 that died in validation); NCCL also aborts on that error."))

    @property
    def normalize(self) -> bool | None:
        """What --similarity asks of the towers (None: their stored setting)."""
        return None if self.similarity is None else self.similarity == "cosine"
