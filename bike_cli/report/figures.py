"""What every figure bike draws shares: text drawn literally, a checked file name, an atomic write.

Titles, labels and captions quote user text (queries, video names, class names, attribute
sentences). matplotlib reads the text between two `$` as mathtext (TeX), so `$\\frac$` in a file name
would raise while the figure is drawn; every drawing function is wrapped in `literal_text`, under which
every `Text` (titles, tick labels, captions, made while drawing or when the file is written) is drawn
as typed (`text.parse_math` off). A character the font lacks (a control character in a file name) is
drawn as a box; matplotlib's warning about it goes to the log, where the CLI shows controls as escapes,
not to stderr raw. Figures are drawn on a `Figure` of their own with the Agg canvas
(pyplot's global state is not touched) and written under a temporary name, then renamed.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bike_cli.errors import InputError
from bike_cli.io.atomic import atomic_write

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable)


def literal_text(draw: F) -> F:
    """Run `draw` with mathtext off (every string it puts on a figure is drawn as typed), its warnings logged."""

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


def supported_formats() -> list[str]:
    """File suffixes (without the dot) the Agg canvas can write: png, pdf, svg, jpg, ..."""
    return sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())


def check_figure_path(path: Path, option: str, example: str = "out.png") -> None:
    """InputError unless `path` ends in a format matplotlib writes (checked before any work)."""
    if Path(path).suffix.lower().lstrip(".") not in supported_formats():
        raise InputError(f"{option} {path}: the file name must end in one of "
                         f"{', '.join('.' + s for s in supported_formats())} (e.g. {example})")


def save_figure(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Write `figure` atomically into `path` (format from its suffix, PNG without one); returns `path`."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        FigureCanvasAgg(figure).print_figure(fh, dpi=dpi, format=path.suffix.lower().lstrip(".") or "png")
    return path
