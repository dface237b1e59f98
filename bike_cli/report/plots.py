"""Report plots of `bike eval --plots DIR`: per-class accuracy and the fusion-weight curve (PNG).

Drawn, with text as typed (a class name may hold a `$`), and written atomically as every figure of
`report.figures`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bike_cli.report.figures import literal_text, save_figure


def per_class_accuracy(scores: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray]:
    """Top-1 accuracy (%) of every class, per branch; NaN for classes with no labelled video."""
    out = {}
    for branch, probs in scores.items():
        pred = probs.argmax(1)
        out[branch] = np.array([100.0 * np.mean(pred[labels == c] == c) if np.any(labels == c) else np.nan
                                for c in range(len(class_names))])
    return out


@literal_text
def plot_per_class_accuracy(accuracy: dict[str, np.ndarray], class_names: list[str], path: Path) -> Path:
    """Horizontal bars per class (sorted by the first branch's accuracy), one colour per branch."""
    first = next(iter(accuracy.values()))
    order = np.argsort(np.nan_to_num(first, nan=-1.0))
    height = max(3.0, 0.22 * len(class_names) * max(1, len(accuracy)) / 2 + 1.5)
    figure = Figure(figsize=(8, min(height, 200)))
    axes = figure.add_subplot()
    width = 0.8 / len(accuracy)
    for i, (branch, values) in enumerate(accuracy.items()):
        axes.barh(np.arange(len(order)) + i * width, np.nan_to_num(values[order]), height=width, label=branch)
    axes.set_yticks(np.arange(len(order)) + 0.4 - width / 2, [class_names[c] for c in order], fontsize=7)
    axes.set_xlabel("top-1 accuracy (%)")
    axes.set_xlim(0, 100)
    axes.set_title("per-class accuracy")
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
