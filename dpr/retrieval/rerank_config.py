"""The reranker's flags, declared once as field metadata (dpr/utils/flags.py) for every script that takes them:
dense_retriever.py (all), data/rerank.py (RerankFlags) and data/denoise_negatives.py (DenoiseFlags). Loads no torch
(the Retriever API imports its default depth)."""
from __future__ import annotations

from dataclasses import dataclass

from dpr.options import positive_int
from dpr.retrieval.mining import DEFAULT_DENOISE_THRESHOLD, DROPPED_FIELD
from dpr.utils.flags import flag

DEFAULT_RERANK_DEPTH = 50  # the official metric reads the top 50
RER = "reranking: a cross-encoder (train_reranker.py) over the top of a first-stage list"
MINE = "hard-negative mining"


@dataclass(frozen=True)
class RerankerFlags:
    """Which reranker, and its batch."""

    reranker: str | None = flag(None, group=RER, metavar="DIR", help=(
        "A reranker directory (train_reranker.py's, or a sentence-transformers CrossEncoder): score the top "
        "--reranker_depth passages with it and order them by its score; the rest follow in first-stage order, "
        "scoring below every reranked one. Its own recorded pair settings (length, lowercasing) are used, not the "
        "run's. With --mine_hard_negatives: drop mined negatives it finds likely relevant (--denoise_threshold), "
        "never reorder."))
    reranker_batch_size: int | None = flag(None, group=RER, type=positive_int, help=(
        "Pairs per reranker forward pass (default: the device's encoding batch: 128 on CPU, sized from the "
        "card's memory on CUDA)."))


@dataclass(frozen=True)
class RerankFlags(RerankerFlags):
    """Reranking a first-stage list."""

    reranker_depth: int | None = flag(None, group=RER, type=positive_int, metavar="N", help=(
        f"First-stage passages reranked per question (default {DEFAULT_RERANK_DEPTH}, the official metric's "
        f"depth); above --n_docs the first stage is taken that deep and the top --n_docs are kept."))


@dataclass(frozen=True)
class DenoiseFlags(RerankerFlags):
    """Denoising hard negatives."""

    denoise_threshold: float | None = flag(None, group=MINE, type=float, metavar="T", help=(
        f"With --reranker: drop a hard negative when sigmoid(its reranker score - the best positive's), the chance "
        f"that the reranker picks it over the labelled positive, exceeds T (default {DEFAULT_DENOISE_THRESHOLD}: "
        f"it scores above the positive). Kept negatives keep their order. Counted in the log and per question "
        f"({DROPPED_FIELD})."))

    def threshold_problem(self) -> str | None:
        t = self.denoise_threshold
        if t is not None and not 0.0 < t < 1.0:
            return f"--denoise_threshold is a probability in (0, 1), got {t}"
        return None
