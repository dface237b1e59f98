"""The contact sheet of `bike search --sheet`: one row per query, its top videos' most salient frames.

A sheet holds at most SHEET_ROWS queries (a taller picture is unreadable, and its memory would grow
with the queries): more are drawn as pages `STEM-1.EXT`, `STEM-2.EXT`, ... (`sheet_pages`), one at a time.

Under each frame its score and video id; a video that could not be read is drawn as a grey blank
labelled "unreadable" (never an error). Drawn, with text as typed, and written atomically as every
figure of `report.figures`.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bike_cli.data.decoding.read import read_frames
from bike_cli.errors import BikeError, InputError
from bike_cli.io.search_index import Hit
from bike_cli.report import figures

log = logging.getLogger(__name__)
TILE_INCHES = 1.8
SHEET_ROWS = 25  # queries per sheet file
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


def check_sheet_path(path: Path) -> None:
    """InputError unless `path` ends in a format matplotlib writes (checked before any work)."""
    figures.check_figure_path(path, "--sheet", "hits.png")


def sheet_pages(path: Path, queries: int) -> list[tuple[Path, range]]:
    """(file, the queries it shows) of a sheet of `queries` rows: `path` itself for up to SHEET_ROWS queries,
    else `STEM-1.EXT`, `STEM-2.EXT`, ... beside it, SHEET_ROWS queries each (the last one the rest)."""
    path = Path(path)
    if queries <= SHEET_ROWS:
        return [(path, range(queries))]
    return [(path.with_name(f"{path.stem}-{k + 1}{path.suffix}"), range(start, min(queries, start + SHEET_ROWS)))
            for k, start in enumerate(range(0, queries, SHEET_ROWS))]


@figures.literal_text
def draw_sheet(rows: Sequence[tuple[str, Sequence[SheetTile]]], out: Path, dpi: int = 100) -> Path:
    """Draw one row per (query, tiles) into `out` (format from its suffix); returns `out`."""
    if not rows:
        raise InputError("no queries to draw")
    check_sheet_path(out)
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
    return figures.save_figure(fig, Path(out), dpi)


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
