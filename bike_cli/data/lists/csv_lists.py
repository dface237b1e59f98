"""The ``csv`` video-list format, and the CSV table reading the Kinetics format shares.

A header row names a path column (``path``, ``video`` or ``filename``; the first of these present
wins) and optionally a label column (``label``, ``labels`` or ``class``; likewise); other columns are
ignored. Several labels in one cell are separated by ``;``; an empty cell is an unknown label.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from bike_cli.data.lists.entries import VideoEntry, check_path
from bike_cli.data.lists.labels import LabelParser
from bike_cli.errors import InputError, location

PATH_COLUMNS = ("path", "video", "filename")
LABEL_COLUMNS = ("label", "labels", "class")


def parse_csv(source: Path, lines: list[str], root: Path, parser: LabelParser) -> list[VideoEntry]:
    """Entries of a CSV list with a path column and an optional label column."""
    columns, rows = csv_table(source, lines)
    path_name = next(name for name in PATH_COLUMNS if name in columns)
    path_i = columns[path_name]
    label_i = next((columns[name] for name in LABEL_COLUMNS if name in columns), None)
    entries = []
    for number, cells in rows:
        video = cells[path_i].strip()
        if not video:
            raise InputError(f"{location(source, number)}: row has no path (column {path_name!r})")
        labels = parser.labels(cells[label_i], number, ";") if label_i is not None else ()
        entries.append(VideoEntry(video, check_path(source, number, root / video), labels, number))
    return entries


def csv_table(source: Path, lines: list[str]) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """(lower-case column name -> index, data rows) of a CSV list with a header."""
    rows = _csv_rows(source, lines)
    _, header = next(rows)
    columns: dict[str, int] = {}
    for i, name in enumerate(header):
        columns.setdefault(name.strip().lower(), i)
    return columns, rows


def _csv_rows(source: Path, lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of the non-blank CSV rows, each as wide as the first (the header).

    The csv module reads the file's text as a whole, so a quoted field may hold a line break (kept
    in the path) and a quote left open is reported at the line where it opens, not taken silently
    as one long path swallowing the rest of the file."""
    reader = csv.reader(io.StringIO("\n".join(lines)), strict=True)
    width, start = 0, 1
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                start = reader.line_num + 1
                continue
            width = width or len(cells)  # the header's
            if len(cells) != width:
                cells = _fit(source, reader.line_num, cells, width)
            yield start, cells
            start = reader.line_num + 1
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise InputError(f"{location(source, start)}: a quoted field opened on this line is never closed "
                             "(unbalanced '\"'): it runs to the end of the file") from None
        raise InputError(f"{location(source, reader.line_num)}: malformed CSV ({e})") from None


def _fit(source: Path, number: int, cells: list[str], width: int) -> list[str]:
    """A short row padded with '' to the header width; InputError for extra non-empty cells."""
    if any(cell.strip() for cell in cells[width:]):
        raise InputError(
            f"{location(source, number)}: row has {len(cells)} fields but the header has {width} "
            "(quote values that contain commas)"
        )
    return cells[:width] + [""] * (width - len(cells))
