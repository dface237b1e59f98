"""The lines of a list, class-name or query file: UTF-8 text (a BOM and CR/LF line ends are accepted),
and the CSV cells of one line."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from bike_cli.config.files import check_regular_file
from bike_cli.errors import InputError, location
from bike_cli.io.file_kind import not_text


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file; InputError when it is missing, not a regular file or unreadable."""
    check_regular_file(path, what)
    try:
        with open(path, encoding="utf-8-sig") as f:  # universal newlines: CR/LF read as \n
            return f.read().split("\n")
    except UnicodeDecodeError as e:
        raise not_text(path, what, e) from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror}") from None


def nonblank(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of every non-blank line."""
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text:
            yield number, text


def csv_cells(source: Path, number: int, text: str) -> list[str]:
    """The CSV cells of line `number` of `source`; InputError naming the line when the csv module refuses
    it (a cell over its field limit of 128 KiB, a stray quote in strict mode)."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error as err:
        raise InputError(f"{location(source, number)}: malformed CSV line of {len(text)} characters ({err})") from None
