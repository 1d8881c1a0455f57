"""Hybrid retrieval: one question's dense and BM25 top-k lists fused into one ranking (pure functions).

Convex (default): over the union of both lists, fused = alpha * dense' + (1 - alpha) * bm25', where x' is the
score min-max normalised within that question's list; a passage missing from a list takes that list's minimum
(normalised 0); a list whose scores are all equal (a single hit included) normalises to 0. Reciprocal-rank fusion
(option): fused = 2 * alpha / (k + dense rank) + 2 * (1 - alpha) / (k + bm25 rank), a missing rank adding nothing; at
alpha 0.5 it is plain RRF. Ties are broken by the normalised dense score, then by presence (alpha for being in the
dense list plus 1 - alpha for being in the BM25 list), then by passage id.

Why equal scores give 0, not 1: a passage missing from a list is read as scoring that list's minimum, so a list
credits a passage only for how far it scores above the list's weakest entry; being in the list at its minimum (mere
presence) is worth what absence is worth, 0. When every score is equal, every entry sits at the minimum: the list
ranks nothing above anything else, so it adds 0 to each of its passages and the fused scores are the other list's;
its members win ties only (presence is worth a tie-break, no more). Mapping them to 1 instead credited a lone BM25
hit with the whole 1 - alpha: at alpha 0.3 it scored 0.7 and outranked every dense hit, the best of which scores 0.3.
The rule is also what the usual guard against a zero range gives: (s - min) / max(max - min, eps) = 0.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FUSIONS = ("convex", "rrf")
DEFAULT_ALPHA = 0.3  # weight of the dense side: best MRR@10 of zero-shot e5 on held-out CMRC train questions (README)


@dataclass(frozen=True)
class FusionConfig:
    """alpha: weight of the dense side (0 = BM25 only, 1 = dense only); depth: how many of each list are fused."""

    alpha: float = DEFAULT_ALPHA
    method: str = "convex"
    depth: int = 100
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be within [0, 1], got {self.alpha}")
        if self.method not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.method!r}")
        if self.depth < 1 or self.rrf_k < 0:
            raise ValueError(f"depth must be >= 1 and rrf_k >= 0, got {self.depth} and {self.rrf_k}")


def fusion_config(alpha: float | None, method: str | None = None, depth: int | None = None) -> FusionConfig | None:
    """The fusion asked for: None without a dense weight; a method or depth left None takes FusionConfig's default
    (the one place the defaults are read, for the scripts and the Retriever alike)."""
    if alpha is None:
        return None
    given = {k: v for k, v in (("method", method), ("depth", depth)) if v is not None}
    return FusionConfig(alpha=alpha, **given)


@dataclass(frozen=True)
class FusedHit:
    """One passage of a fused ranking; a raw score is None when the passage is not in that side's list."""

    pid: str
    score: float
    dense_score: float | None
    bm25_score: float | None


def minmax(scores: Sequence[float]) -> list[float]:
    """Scores mapped linearly onto [0, 1] (min -> 0, max -> 1); all equal (one score included) -> all 0: every one
    sits at the minimum, worth what a passage missing from the list is worth (see the module docstring)."""
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [0.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def _as_dict(hits: Sequence[tuple[str, float]], side: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid, score in hits:
        if pid in out:
            raise ValueError(f"passage {pid!r} appears twice in the {side} list")
        out[pid] = float(score)
    return out


def fuse(dense: Sequence[tuple[str, float]], bm25: Sequence[tuple[str, float]],
         config: FusionConfig = FusionConfig()) -> list[FusedHit]:
    """The union of the first `config.depth` (pid, score) pairs of each list (each best first), ranked by fusion."""
    d = _as_dict(dense[:config.depth], "dense")
    b = _as_dict(bm25[:config.depth], "BM25")
    d_norm = dict(zip(d, minmax(list(d.values()))))
    b_norm = dict(zip(b, minmax(list(b.values()))))
    union = list(d) + [pid for pid in b if pid not in d]
    if config.method == "convex":
        fused = {p: config.alpha * d_norm.get(p, 0.0) + (1 - config.alpha) * b_norm.get(p, 0.0) for p in union}
    else:
        d_rank = {p: r for r, p in enumerate(d, 1)}
        b_rank = {p: r for r, p in enumerate(b, 1)}
        fused = {p: (2 * config.alpha / (config.rrf_k + d_rank[p]) if p in d_rank else 0.0)
                 + (2 * (1 - config.alpha) / (config.rrf_k + b_rank[p]) if p in b_rank else 0.0) for p in union}
    presence = {p: config.alpha * (p in d) + (1 - config.alpha) * (p in b) for p in union}
    order = sorted(union, key=lambda p: (-fused[p], -d_norm.get(p, 0.0), -presence[p], p))
    return [FusedHit(p, fused[p], d.get(p), b.get(p)) for p in order]
