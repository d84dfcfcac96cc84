"""The report of `textgen.compare`: its rows as a Markdown table and as a log-log plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _mb(value: float) -> str:
    """MB with a readable unit."""
    if value >= 1e6:
        return f"{value / 1e6:,.2f} TB"
    if value >= 10_000:
        return f"{value / 1000:,.1f} GB"
    return f"{value:,.0f} MB" if value >= 100 else f"{value:.3g} MB"


def _steps(steps: int) -> str:
    """`1 step` or `N steps`."""
    return f"{steps} step" if steps == 1 else f"{steps} steps"


def _peak(row: dict[str, Any], name: str) -> str:
    """A one-hot run's peak, or why it has none."""
    peak = row[f"onehot_{name}_peak_mb"]
    if peak is not None:
        return _mb(peak)
    if row.get(f"onehot_{name}_status") == "failed":
        return f"failed: {row.get('onehot_error', '?')}"
    return f"skipped (est. {_mb(row[f'onehot_{name}_estimate_mb'])})"


def markdown_table(rows: Sequence[dict[str, Any]], steps: int) -> str:
    """The rows as a Markdown table (MB = 10^6 bytes)."""
    head = [
        "corpus", "chars", "vocab", "windows", "one-hot X bytes", "one-hot y bytes",
        "one-hot build peak", f"one-hot build + {_steps(steps)} peak", "textgen index on disk",
        f"textgen {_steps(steps)} peak",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * (len(head) - 4) + "---:|" * 4]
    for r in rows:
        corpus = f"{r['mb']:g} MB" + (" (whole corpus)" if r["whole_corpus"] else "")
        cells = [
            corpus, f"{r['chars']:,}", str(r["vocab"]), f"{r['windows']:,}",
            f"{r['onehot_x_bytes']:,}", f"{r['onehot_y_bytes']:,}", _peak(r, "build"),
            _peak(r, "train"), _mb(r["ids_index_bytes"] / 1e6), _mb(r["ids_train_peak_mb"]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(
    rows: Sequence[dict[str, Any]],
    path: str,
    steps: int,
    available: float,
    *,
    ram_fraction: float,
) -> bool:
    """Peak RSS vs corpus size, log-log; skipped one-hot runs as dashed estimates.

    Args:
        rows: `compare.measure` results, smallest prefix first.
        path: The PNG to write.
        steps: Training steps per run (for the labels).
        available: MB of available RAM when measured (inf: no line drawn).
        ram_fraction: The skip rule's share of `available`, drawn as a dotted line.

    Returns:
        False when matplotlib is not installed (nothing is written).
    """
    try:
        import matplotlib.ticker
        from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it was
    except ImportError:
        return False
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    mb = [r["mb"] for r in rows]
    series = (
        ("onehot_train", f"one-hot: build + {_steps(steps)} of fit", "tab:red", "s"),
        ("onehot_build", "one-hot: build X and y", "tab:orange", "o"),
    )
    for key, label, color, marker in series:
        done = [(m, r[f"{key}_peak_mb"]) for m, r in zip(mb, rows, strict=True)
                if r[f"{key}_peak_mb"] is not None]  # fmt: skip
        est = [(m, r[f"{key}_estimate_mb"]) for m, r in zip(mb, rows, strict=True)
               if r[f"{key}_peak_mb"] is None]  # fmt: skip
        if done:
            ax.plot(*zip(*done, strict=True), color=color, marker=marker, label=label)
        if est:
            ax.plot(*zip(*(done[-1:] + est), strict=True), color=color, marker=marker,
                    linestyle="--", mfc="none", label=f"{label} (skipped: estimate)")  # fmt: skip
    ids = [r["ids_train_peak_mb"] for r in rows]
    ax.plot(mb, ids, color="tab:blue", marker="^", label=f"textgen: {_steps(steps)} (int32 ids)")
    if math.isfinite(available):
        ax.axhline(ram_fraction * available, color="gray", linestyle=":",
                   label=f"{ram_fraction:.0%} of available RAM")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="corpus prefix (MB)", ylabel="peak RSS (MB)",
           title="Peak memory: one-hot arrays vs integer ids")  # fmt: skip
    ax.set_xticks(mb)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True
