"""The typed training configuration: built once by train_dense_encoder.py from its flags (the library never sees
argparse), with every derived value (temperature, per-rank batch, chunk sizes, sampling) worked out here only."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from dpr.training.data import SamplingConfig

Similarity = Literal["dot", "cosine"]
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def default_temperature(similarity: Similarity) -> float:
    """Cosine scores live in [-1, 1] and need sharpening; dot products do not."""
    return 0.01 if similarity == "cosine" else 1.0


@dataclass(frozen=True)
class TrainConfig:
    # data
    train_file: str
    output_dir: str
    dev_file: str | None = None
    hard_negatives: int = 1
    other_negatives: int = 0
    shuffle_positive_ctx: bool = False
    max_train_questions: int = 0
    max_dev_questions: int = 0
    num_workers: int = 2
    q_sequence_length: int = 32
    p_sequence_length: int = 384
    # optimisation
    batch_size: int = 2  # global: questions per optimizer step over all ranks
    learning_rate: float = 1e-5
    num_train_epochs: int = 3
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    seed: int = 0
    similarity: Similarity = "dot"  # resolved: the towers normalise iff cosine
    temperature: float = 1.0  # resolved (default_temperature unless given)
    precision: Literal["fp16", "bf16", "fp32"] = "fp32"  # resolved for this run's device
    # gradient cache
    grad_cache: bool = False
    q_chunk_size: int = 16
    ctx_chunk_size: int = 8
    # validation
    dev_batch_size: int = 4
    val_av_rank_start_epoch: int = 10000
    val_av_rank_max_qs: int = 10000
    val_av_rank_hard_neg: int = 30
    val_av_rank_other_neg: int = 30
    val_av_rank_bsz: int = 128
    # checkpoints and logging
    checkpoint_file_name: str = "dpr_biencoder"
    save_every_steps: int = 0
    keep_checkpoints: int = 0  # 0: all; else this run's newest N plus its best
    eval_every_steps: int = 0  # 0: validation at epoch ends only; else also every N steps (log and plot only)
    log_batch_step: int = 100
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', not {self.similarity!r}")
        if self.precision not in AMP_DTYPES:
            raise ValueError(f"precision must be one of {tuple(AMP_DTYPES)}, not {self.precision!r}")

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
