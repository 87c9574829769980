"""Plots the bench scripts share (matplotlib is a bench extra, imported when a plot is made)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def per_game_bars(games: list[str], series: dict[str, list[float]], path: Path, ylabel: str, title: str,
                  lines: dict[str, float] | None = None) -> None:
    """Grouped bars, one group per game and one bar per series, with a grey line at 1 and
    optional labelled dashed lines (reference values)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = np.arange(len(games))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(12, 4))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    for label, value in (lines or {}).items():
        ax.axhline(value, color="red", lw=1, ls="--", label=label)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(x, games, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
