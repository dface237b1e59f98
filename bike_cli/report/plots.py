"""Report plots of `bike eval --plots DIR`: per-class accuracy and the fusion-weight curve (PNG).

Drawing only (what to show is the caller's: `eval.metrics` measures, the eval stage chooses), with
text as typed (a class name may hold a `$`), written atomically as every figure of `report.figures`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bike_cli.report.figures import literal_text, save_figure


@literal_text
def plot_per_class_accuracy(accuracy: dict[str, np.ndarray], names: list[str], title: str, path: Path,
                            gap: int | None = None) -> Path:
    """Horizontal bars of top-1 (%) per class, one colour per branch, the first class at the bottom.

    accuracy: branch -> [n] values of the n classes `names`, in drawing order; `gap`: a dashed line below
    the class of that position (where classes were left out between two groups)."""
    n, branches = len(names), max(1, len(accuracy))
    figure = Figure(figsize=(8, 1.5 + n * (0.18 + 0.08 * branches)))
    axes = figure.add_subplot()
    width = 0.8 / branches
    for i, (branch, values) in enumerate(accuracy.items()):
        axes.barh(np.arange(n) + i * width, values, height=width, label=branch)
    axes.set_yticks(np.arange(n) + 0.4 - width / 2, names, fontsize=8)
    axes.set_ylim(-0.5, n - 0.1)
    if gap is not None:
        axes.axhline(gap - 0.5 + 0.4 - width / 2, color="0.4", linestyle="--", linewidth=0.8)
    axes.set_xlabel("top-1 accuracy (%)")
    axes.set_xlim(0, 100)
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return save_figure(figure, path)


@literal_text
def plot_fusion_curve(lambdas: np.ndarray, top1: np.ndarray, chosen: float | None, path: Path) -> Path:
    """The fusion-weight curve (`eval.fusion.fusion_curve`: lambdas and top-1 %), with the lambda used marked."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    axes.plot(lambdas, top1, marker="o", markersize=3)
    if chosen is not None:
        axes.axvline(chosen, color="#d62728", linestyle="--", label=f"lambda = {chosen:g}")
        axes.legend()
    axes.set_xlabel("lambda (weight of the Video branch)")
    axes.set_ylabel("top-1 (%) on this set")
    axes.set_title("S = lambda * S_V + (1 - lambda) * S_A")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)
