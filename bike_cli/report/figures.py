"""Every figure bike draws: eval's plots (`--plots`), predict's Fig. 3 (`--explain`), search's sheet (`--sheet`).
Drawing only; each figure is a `Figure` of its own on the Agg canvas (pyplot's state untouched), written atomically.
"""

from __future__ import annotations

import functools
import logging
import textwrap
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure

from bike_cli.data.decoding.read import read_frames
from bike_cli.errors import BikeError, InputError
from bike_cli.io.atomic import atomic_write
from bike_cli.io.search_index import Hit

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable)


def literal_text(draw: F) -> F:
    """Run `draw` with mathtext off (titles quote user text: a `$` is drawn as typed), its warnings logged."""

    @functools.wraps(draw)
    def literally(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                return draw(*args, **kwargs)
            finally:
                for message in dict.fromkeys(str(w.message) for w in caught):
                    log.warning("figure: %s", message)

    return literally  # type: ignore[return-value]


def check_figure_path(path: Path, option: str, example: str = "out.png") -> None:
    """InputError unless `path` ends in a format matplotlib writes (checked before any work)."""
    formats = sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())  # png, pdf, svg, jpg, ...
    if Path(path).suffix.lower().lstrip(".") not in formats:
        raise InputError(f"{option} {path}: the file name must end in one of "
                         f"{', '.join('.' + s for s in formats)} (e.g. {example})")


def save_figure(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Write `figure` atomically into `path` (format from its suffix, PNG without one); returns `path`."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        FigureCanvasAgg(figure).print_figure(fh, dpi=dpi, format=path.suffix.lower().lstrip(".") or "png")
    return path


@literal_text
def plot_per_class_accuracy(accuracy: dict[str, np.ndarray], names: list[str], title: str, path: Path,
                            gap: int | None = None) -> Path:
    """Horizontal bars of top-1 (%) per class, one colour per branch (-> [n], the n `names` in drawing order,
    the first at the bottom); `gap`: a dashed line below that position (classes left out between two groups)."""
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


@literal_text
def draw_explanation(predictions: Sequence[ExplainedVideo], out: Path, dpi: int = 100) -> Path:
    """Draw the paper's Fig. 3 into `out` (format from its suffix): a row per video, its T frames over bars of
    their saliency for the predicted class (the most salient in red), the prediction as title, the sentence
    as caption."""
    if not predictions:
        raise InputError("no predictions to explain")
    check_figure_path(out, "--explain")
    steps = max(len(p.saliency) for p in predictions)
    fig = Figure(figsize=(max(6.0, FRAME_INCHES * steps + 0.5), ROW_INCHES * len(predictions)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    rows = fig.subfigures(len(predictions), 1, squeeze=False)[:, 0]
    for row, prediction in zip(rows, predictions):
        _draw_row(row, prediction, wrap=int(14 * steps))
    return save_figure(fig, Path(out), dpi)


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


TILE_INCHES = 1.8
SHEET_ROWS = 25  # queries per sheet file: a taller picture is unreadable, and its memory grows with the rows
BLANK = 0.85  # grey level of an unreadable video's tile


@dataclass
class SheetTile:
    image: np.ndarray | None  # uint8 [H, W, 3], None: the video could not be read
    score: float
    video_id: str
    frame: int  # the frame's number in the video


def hit_tile(hit: Hit) -> SheetTile:
    """The hit's salient frame, decoded (None when the video cannot be read: a labelled blank)."""
    try:
        clip = read_frames(hit.path, lambda n: [min(hit.salient_frame, n - 1)], short_side=160)
        image = clip.frames[0].numpy()
    except (BikeError, OSError, RuntimeError, ValueError) as err:
        log.warning("sheet: %s cannot be read (%s); drawn blank", hit.path, err)
        image = None
    return SheetTile(image, hit.score, hit.video_id, hit.salient_frame)


def sheet_pages(path: Path, queries: int) -> list[tuple[Path, range]]:
    """(file, the queries it shows) of a sheet of `queries` rows: `path` itself for up to SHEET_ROWS queries,
    else `STEM-1.EXT`, `STEM-2.EXT`, ... beside it, SHEET_ROWS queries each (the last one the rest)."""
    path = Path(path)
    if queries <= SHEET_ROWS:
        return [(path, range(queries))]
    return [(path.with_name(f"{path.stem}-{k + 1}{path.suffix}"), range(start, min(queries, start + SHEET_ROWS)))
            for k, start in enumerate(range(0, queries, SHEET_ROWS))]


@literal_text
def draw_sheet(rows: Sequence[tuple[str, Sequence[SheetTile]]], out: Path, dpi: int = 100) -> Path:
    """Draw one row per (query, tiles) into `out` (format from its suffix); returns `out`. Under each frame
    its score and video id; an unreadable video is a grey blank labelled "unreadable" (never an error)."""
    if not rows:
        raise InputError("no queries to draw")
    check_figure_path(out, "--sheet", "hits.png")
    width = max(1, max(len(tiles) for _, tiles in rows))
    fig = Figure(figsize=(max(4.0, TILE_INCHES * width), (TILE_INCHES + 0.8) * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    for row, (query, tiles) in zip(fig.subfigures(len(rows), 1, squeeze=False)[:, 0], rows):
        axes = row.subplots(1, width, squeeze=False)[0]
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off")
        for ax, tile in zip(axes, tiles):
            _draw_tile(ax, tile)
        row.suptitle(textwrap.fill(f"\u201c{query}\u201d", 18 * width), fontsize=10)
    return save_figure(fig, Path(out), dpi)


def _draw_tile(ax, tile: SheetTile) -> None:
    ax.axis("on")
    if tile.image is None:
        ax.imshow(np.full((9, 16, 3), BLANK))
        ax.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    else:
        ax.imshow(tile.image)
    for spine in ax.spines.values():
        spine.set_visible(False)
    label = tile.video_id if len(tile.video_id) <= 28 else "..." + tile.video_id[-25:]
    ax.set_xlabel(f"{tile.score:.3f}  frame {tile.frame}\n{label}", fontsize=7)
