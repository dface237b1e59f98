"""The paper's Fig. 3 for `bike predict --explain`: sampled frames, temporal saliency, attributes.

One figure for all the videos of a run, one row per video (as the paper's figure stacks its
examples): the T sampled frames (the centre crops the model saw) in a strip, titled with their frame
index; under each frame a bar with its temporal saliency for the predicted class, the most salient
frame in red with a red frame around its picture; the video's name, predicted class and probability
as the row's title; the attribute sentence as its caption. With the mean head the saliency is uniform
(1/T, no frame stands out) and the row says so.

Drawn, with text as typed, and written atomically as every figure of `report.figures`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure

from bike_cli.errors import InputError
from bike_cli.report import figures


class ExplainedVideo(Protocol):
    """What a row of the figure shows of one video (`bike_cli.engine.evaluation.VideoPrediction` has it)."""

    video: Path
    top: list[tuple[str, float]]  # (class name, probability), best first
    saliency: list[float]  # [T] temporal saliency of the predicted class
    saliency_method: str  # "vcs" or "uniform"
    frame_indices: list[int]  # [T]
    sentence: str | None  # the attribute sentence (None without a lexicon)
    thumbnails: np.ndarray  # uint8 [T, S, S, 3]

FRAME_INCHES = 1.5  # width of one frame in the strip
ROW_INCHES = 3.1  # one video: title, frames, saliency bars, caption
HIGHLIGHT, PLAIN = "#d62728", "#8c8c8c"


def check_figure_path(path: Path) -> None:
    """InputError unless `path` ends in a format matplotlib writes (checked before any work)."""
    figures.check_figure_path(path, "--explain")


@figures.literal_text
def draw_explanation(predictions: Sequence[ExplainedVideo], out: Path, dpi: int = 100) -> Path:
    """Draw Fig. 3 for `predictions` (one row each) into `out` (format from its suffix); returns `out`."""
    if not predictions:
        raise InputError("no predictions to explain")
    check_figure_path(out)
    steps = max(len(p.saliency) for p in predictions)
    fig = Figure(figsize=(max(6.0, FRAME_INCHES * steps + 0.5), ROW_INCHES * len(predictions)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    rows = fig.subfigures(len(predictions), 1, squeeze=False)[:, 0]
    for row, prediction in zip(rows, predictions):
        _draw_row(row, prediction, wrap=int(14 * steps))
    return figures.save_figure(fig, Path(out), dpi)


def _draw_row(row: SubFigure, p: ExplainedVideo, wrap: int) -> None:
    """One video: the frame strip over the saliency bars, titled and captioned."""
    saliency = np.asarray(p.saliency, dtype=np.float64)  # [T]
    vcs = p.saliency_method == "vcs"
    best = int(saliency.argmax()) if vcs else -1
    axes = row.subplots(2, len(saliency), squeeze=False, gridspec_kw={"height_ratios": [1.0, 0.55]})
    top = max(float(saliency.max()), 1e-6) * 1.35
    for t, (frame_ax, bar_ax) in enumerate(zip(axes[0], axes[1])):
        colour = HIGHLIGHT if t == best else PLAIN
        frame_ax.imshow(p.thumbnails[t])
        frame_ax.set_xticks([])
        frame_ax.set_yticks([])
        frame_ax.set_title(f"frame {p.frame_indices[t]}", fontsize=8)
        for spine in frame_ax.spines.values():
            spine.set_edgecolor(colour if t == best else "white")
            spine.set_linewidth(3 if t == best else 0.5)
        bar_ax.bar([0], [saliency[t]], width=0.6, color=colour)
        bar_ax.text(0, saliency[t], f"{saliency[t]:.3f}", ha="center", va="bottom", fontsize=8,
                    fontweight="bold" if t == best else "normal")
        bar_ax.set_xlim(-0.5, 0.5)
        bar_ax.set_ylim(0, top)
        bar_ax.axis("off")
    name, prob = p.top[0]
    note = "temporal saliency (VCS)" if vcs else "mean head: uniform saliency (no VCS)"
    row.suptitle(textwrap.fill(f"{p.video.name}  -  prediction: {name} ({prob:.1%})  -  {note}", wrap),
                 fontsize=10)
    caption = p.sentence if p.sentence else "(no attributes: no lexicon)"
    row.supxlabel(textwrap.fill(f"+ Attributes: {caption}", wrap), fontsize=9, style="italic")

