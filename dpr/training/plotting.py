"""training_curves.png: what a run did, step by step: the per-step loss with a smoothed line over it, the learning
rate, and every validation point (epoch ends and, with --eval_every_steps, points within an epoch) against steps."""
from __future__ import annotations

import os

import numpy as np

from dpr.utils.io import atomic_path

HIGHER_IS_BETTER = {"mrr@10"}  # the reranker's; the bi-encoder's nll and average rank are lower-is-better


def smooth(values: list[float], window: int | None = None) -> np.ndarray:
    """Trailing moving average (the first points average what there is so far); window: ~1/10 of the run, 1-50.
    Non-finite points (a NaN / inf loss) are left out of every average; a window without a finite point is NaN."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    w = window or max(1, min(50, x.size // 10))
    finite = np.isfinite(x)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, x, 0.0))])
    count = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - w)
    n = count[idx] - count[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (csum[idx] - csum[lo]) / np.maximum(n, 1), np.nan)


def curve_series(log: list[dict]) -> dict:
    """The plotted series from train_log.jsonl records: steps, raw and smoothed loss, lr, and per metric the
    validation points (step, value, end_of_epoch)."""
    steps = [r for r in log if r.get("type") == "step"]
    vals = [r for r in log if r.get("type") == "validation"]
    out = {"step": [r["step"] for r in steps], "loss": [r["loss"] for r in steps],
           "loss_smooth": smooth([r["loss"] for r in steps]).tolist(), "lr": [r["lr"] for r in steps],
           "validation": {}}
    for r in vals:
        out["validation"].setdefault(r["metric"], []).append((r["step"], r[r["metric"]], r.get("end_of_epoch", True)))
    return out


def plot_training_curves(log: list[dict], path: str | os.PathLike) -> None:
    """Three panels (loss, learning rate, validation vs step), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = curve_series(log)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(s["step"], s["loss"], lw=0.8, alpha=0.35, label="per step")
    axes[0].plot(s["step"], s["loss_smooth"], lw=2, label="smoothed")
    axes[0].set(xlabel="step", ylabel="training loss (NLL)", title="training loss")
    if s["step"]:
        axes[0].legend()
    axes[1].plot(s["step"], s["lr"], lw=1.5)
    axes[1].set(xlabel="step", ylabel="learning rate", title="learning rate")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax = axes[2]
    for i, (metric, pts) in enumerate(sorted(s["validation"].items())):
        target = ax if i == 0 else ax.twinx()  # NLL and average rank live on different scales
        color = f"C{i}"
        target.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=color, lw=1, label=metric)
        ends = [p for p in pts if p[2]]
        target.plot([p[0] for p in ends], [p[1] for p in ends], "o", color=color, label=f"{metric} (epoch end)")
        better = "higher" if metric in HIGHER_IS_BETTER else "lower"
        target.set_ylabel(f"dev {metric} ({better} is better)", color=color)
        values = [p[1] for p in pts]
        if max(values) == min(values):  # one point or a flat line: a readable range around it, not +-0.04
            pad = abs(values[0]) * 0.1 or 1.0
            target.set_ylim(values[0] - pad, values[0] + pad)
    ax.set(xlabel="step", title="validation")
    if s["step"]:
        ax.set_xlim(0, max(s["step"]) * 1.02 + 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
