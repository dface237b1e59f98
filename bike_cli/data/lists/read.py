"""Read a video list (``read_video_list``): detect its format, parse it, check its entries.

Formats, detected from the extension and the first non-blank line:

``kinetics`` (`kinetics`)
    Chosen when the header has ``youtube_id``, ``time_start`` and ``time_end``.
``csv`` (`csv_lists`)
    Chosen when the header names a path column; a ``.csv`` file whose header names neither a path
    column nor the Kinetics columns is an error.
``text`` (mmaction style, `text`)
    Chosen when the file is neither of the CSV formats above.

Labels are read by `labels`: class indices, or class names with the class-name list (``--classes``).

Paths: relative paths resolve against ``root``, which defaults to the folder of the list file (so
a list travels with its videos); absolute paths are used as written. Apart from the Kinetics
folder lookup, no path is checked for existence here: the decoder reports missing files.

All files are read as UTF-8 (a BOM and CR/LF line ends are accepted); blank lines are ignored.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bike_cli.data.lists.csv_lists import PATH_COLUMNS, parse_csv
from bike_cli.data.lists.entries import VideoEntry, VideoList, check_unique_videos
from bike_cli.data.lists.kinetics import KINETICS_COLUMNS, parse_kinetics
from bike_cli.data.lists.labels import LabelParser
from bike_cli.data.lists.lines import csv_cells, nonblank, read_lines
from bike_cli.data.lists.text import parse_text
from bike_cli.errors import InputError, location

log = logging.getLogger(__name__)

ListParser = Callable[[Path, list[str], Path, LabelParser], list[VideoEntry]]


def read_video_list(
    path: str | Path,
    root: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> VideoList:
    """Read a text, CSV or Kinetics video list; relative paths resolve against `root`.

    `root` defaults to the folder of the list file. Label names need `class_names`.
    """
    source = Path(path)
    lines = read_lines(source, "video list")
    fmt = _detect_format(source, lines)
    base = _video_root(source, root)
    with _gc_paused():
        entries = _PARSERS[fmt](source, lines, base, LabelParser(source, class_names))
    if not entries:
        raise InputError(f"{source}: the video list has no videos")
    entries = check_unique_videos(source, entries)
    multilabel = any(len(entry.labels) > 1 for entry in entries)
    log.info("read %d videos from %s (%s format, root %s)", len(entries), source, fmt, base)
    return VideoList(entries, source, fmt, multilabel)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many entries (no cycles are made).

    Its repeated passes over the growing list of entries and paths doubled the time of a
    240,000-line list.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _video_root(source: Path, root: str | Path | None) -> Path:
    """The absolute folder relative paths resolve against."""
    if root is None:
        return source.parent.absolute()
    folder = Path(root)
    if not folder.is_dir():
        raise InputError(f"video root is not a folder: {folder}")
    return folder.absolute()


def _detect_format(source: Path, lines: list[str]) -> str:
    """'kinetics', 'csv' or 'text', from the first non-blank line and the extension."""
    first_line, first = next(nonblank(lines), (None, ""))
    if first_line is None:
        raise InputError(f"{source}: the video list is empty")
    is_csv = source.suffix.lower() == ".csv"
    if is_csv or "," in first:
        header = {cell.strip().lower() for cell in csv_cells(source, first_line, first)}
        if header.issuperset(KINETICS_COLUMNS):
            return "kinetics"
        if header.intersection(PATH_COLUMNS):
            return "csv"
        if is_csv:
            raise InputError(
                f"{location(source, first_line)}: CSV header {first!r} names no path column "
                f"(one of {', '.join(PATH_COLUMNS)}) and is not a Kinetics header "
                f"({','.join(KINETICS_COLUMNS)})"
            )
    return "text"


_PARSERS: dict[str, ListParser] = {
    "text": parse_text,
    "csv": parse_csv,
    "kinetics": parse_kinetics,
}
