"""Hybrid retrieval: one question's dense and BM25 top-k lists fused into one ranking (pure functions).

Convex (default): over the union of both lists, fused = alpha * dense' + (1 - alpha) * bm25', where x' is the
score scaled within that question's list so that what a passage missing from the list would score maps to 0 and the
list's best to 1 (`scale`). Reciprocal-rank fusion (option): fused = 2 * alpha / (k + dense rank) + 2 * (1 - alpha) /
(k + bm25 rank), a missing rank adding nothing; at alpha 0.5 it is plain RRF. Ties are broken by the scaled dense
score, then by presence (alpha for being in the dense list plus 1 - alpha for being in the BM25 list), then by
passage id.

What a missing passage scores (`absent_score`): a BM25 list shorter than its depth is exhaustive: every passage
sharing a token with the question is in it and every other passage scores exactly 0, so its scores are scaled
against 0 (s / max): a lone hit, or tied hits, get the whole 1 - alpha, and adding a weaker hit never moves the
others. A list cut at its depth (BM25 or dense) says only that a missing passage scores at most its last entry, so it
is scaled against its own minimum (min-max; its last entry is then worth what absence is worth, and a cut list of
equal scores adds 0). Dense scores have no known floor, so the dense list is always min-max scaled. (Min-max on an
exhaustive BM25 list made its last entry worth absence: a lone hit or two tied hits, the only passages matching the
question's words, added 0 and fell below every dense hit, and one much weaker extra hit lifted them to the top.)
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


def scale(scores: Sequence[float], floor: float | None = None) -> list[float]:
    """Scores mapped linearly so that `floor` (what a passage missing from the list scores; None: the list's
    minimum) -> 0 and the maximum -> 1; a maximum not above the floor (all equal, when the floor is the minimum) ->
    all 0."""
    if not scores:
        return []
    hi = max(scores)
    lo = min(scores) if floor is None else floor
    if hi <= lo:
        return [0.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def absent_score(hits: Sequence[tuple[str, float]], depth: int) -> float | None:
    """What a passage missing from a BM25 list of `depth` scores: 0 when the list is shorter than its depth
    (exhaustive: it holds every passage sharing a token, the rest score 0), else unknown (None: at most the list's
    minimum, which `scale` then uses)."""
    return 0.0 if len(hits) < depth else None


def _as_dict(hits: Sequence[tuple[str, float]], side: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid, score in hits:
        if pid in out:
            raise ValueError(f"passage {pid!r} appears twice in the {side} list")
        out[pid] = float(score)
    return out


def fuse(dense: Sequence[tuple[str, float]], bm25: Sequence[tuple[str, float]],
         config: FusionConfig = FusionConfig()) -> list[FusedHit]:
    """The union of the first `config.depth` (pid, score) pairs of each list (each best first), ranked by fusion;
    `bm25` whole (as searched, at most `config.depth` deep when it holds every match) tells whether it was cut."""
    d = _as_dict(dense[:config.depth], "dense")
    b = _as_dict(bm25[:config.depth], "BM25")
    d_norm = dict(zip(d, scale(list(d.values()))))
    b_norm = dict(zip(b, scale(list(b.values()), absent_score(bm25, config.depth))))
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
