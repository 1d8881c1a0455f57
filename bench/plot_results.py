"""The results chart: one panel per data set, one bar per retriever, each bar's value read from the `.metrics.json`
file its run wrote (run_test.sh / dense_retriever.py write `<out>.metrics.json`; BM25 runs get theirs from
`python data/evaluate_dureader.py REF PRED > <name>.metrics.json`, as run_demo.sh does). Nothing is typed in by hand.

  python bench/plot_results.py --out docs/img/results.png \\
    --panel "demo: CMRC trial, 871 passages" "BM25=demo_outputs/bm25_test.metrics.json" \\
            "zero-shot=demo_outputs/zeroshot_test.metrics.json" "fine-tuned=demo_outputs/finetuned_test.metrics.json" \\
            "hybrid=demo_outputs/hybrid_test.metrics.json" \\
    --panel "CMRC dev, 11,630 passages" "BM25=outputs/bm25_dev.metrics.json" ...

--demo_dir D adds the demo's panel (its four files, named as run_demo.sh names them) without spelling them out.
Bad input (a missing file, a file without the metric, a NAME=PATH without its `=`): one `error:` line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.utils.cli import fail, run_script  # noqa: E402
from dpr.utils.io import atomic_path  # noqa: E402

METRICS = ("MRR@10", "recall@1", "recall@50")
# run_demo.sh's four runs: (bar name, the metrics file it writes in DEMO_DIR)
DEMO_RUNS = (("BM25", "bm25_test"), ("zero-shot", "zeroshot_test"), ("fine-tuned", "finetuned_test"),
             ("hybrid", "hybrid_test"))


@dataclass(frozen=True)
class Bar:
    """One retriever of one panel: its name, the metrics file and the value read from it."""
    name: str
    path: str
    value: float


@dataclass(frozen=True)
class Panel:
    """One data set: a title and its bars, in the order given."""
    title: str
    bars: tuple[Bar, ...]


def read_metric(path: str, metric: str) -> float:
    """`metric` from one .metrics.json file (the official evaluator's keys)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"{path}: no such metrics file")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fail(f"{path}: not a JSON metrics file ({e})")
    value = data.get(metric) if isinstance(data, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        fail(f"{path}: no numeric {metric!r} (keys: {sorted(data) if isinstance(data, dict) else type(data).__name__})")
    return float(value)


def parse_panel(spec: list[str], metric: str) -> Panel:
    """--panel TITLE NAME=PATH [NAME=PATH ...] -> a Panel with each file's value."""
    title, *pairs = spec
    if not pairs:
        fail(f"--panel {title!r}: no NAME=PATH after the title")
    bars = []
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            fail(f"--panel {title!r}: {pair!r} is not NAME=PATH")
        bars.append(Bar(name, path, read_metric(path, metric)))
    return Panel(title, tuple(bars))


def demo_panel(demo_dir: str, metric: str, title: str) -> Panel:
    """The demo's four runs from DEMO_DIR, named as run_demo.sh's table names them (short)."""
    return Panel(title, tuple(Bar(name, p, read_metric(p, metric))
                              for name, stem in DEMO_RUNS for p in [str(Path(demo_dir) / f"{stem}.metrics.json")]))


def plot(panels: list[Panel], metric: str, out: str | Path) -> None:
    """Horizontal bars per panel, each labelled with its value (4 decimals), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(len(p.bars) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 0.55 * height + 1.3), squeeze=False)
    values = [b.value for p in panels for b in p.bars]
    lo = max(0.0, min(values) - 0.05)
    hi = min(1.0, max(values) + 0.03) if max(values) <= 1 else max(values) * 1.05
    for ax, panel in zip(axes[0], panels):
        names = [b.name for b in panel.bars][::-1]  # first bar on top
        vals = [b.value for b in panel.bars][::-1]
        best = max(vals)
        colors = ["C1" if v == best else "C0" for v in vals]
        ax.barh(names, vals, color=colors)
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.4f}", va="center", fontsize=9)
        ax.set_xlim(lo, hi + (hi - lo) * 0.18)  # room for the labels
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(metric)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[Panel]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="The PNG to write (atomically).")
    p.add_argument("--panel", nargs="+", action="append", default=[], metavar="TITLE NAME=PATH",
                   help="One data set: its title, then NAME=PATH per retriever (PATH: a .metrics.json file).")
    p.add_argument("--demo_dir", default=None, help="Add run_demo.sh's panel from the four metrics files in DIR.")
    p.add_argument("--demo_title", default="demo: 1,000 CMRC trial questions", help="The demo panel's title.")
    p.add_argument("--metric", choices=METRICS, default="MRR@10")
    args = p.parse_args(argv)
    panels = [demo_panel(args.demo_dir, args.metric, args.demo_title)] if args.demo_dir else []
    panels += [parse_panel(spec, args.metric) for spec in args.panel]
    if not panels:
        p.error("nothing to draw: give --demo_dir and/or --panel")
    plot(panels, args.metric, args.out)
    for panel in panels:
        print(f"{panel.title}: " + ", ".join(f"{b.name} {b.value:.4f}" for b in panel.bars))
    print(f"wrote {args.out}")
    return panels


if __name__ == "__main__":
    sys.exit(run_script(lambda: main()))
