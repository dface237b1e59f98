"""The ``kinetics`` video-list format: the official Kinetics CSV.

Header ``label,youtube_id,time_start,time_end,split`` (the test split may lack the ``label`` column
or leave it empty; extra columns are ignored). A row is the file
``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` and its stem is the video id. The file is looked
for at ``root/file``, then ``root/<label>/file``, then ``root/<label with spaces as _>/file`` (each
folder listed once); when none exists the path is ``root/file`` and decoding reports it missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from bike_cli.data.lists.csv_lists import csv_table
from bike_cli.data.lists.entries import VideoEntry, check_path
from bike_cli.data.lists.labels import LabelParser
from bike_cli.errors import InputError, location

KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")


def parse_kinetics(source: Path, lines: list[str], root: Path, parser: LabelParser) -> list[VideoEntry]:
    """Entries of an official Kinetics CSV (`label,youtube_id,time_start,time_end,split`)."""
    columns, rows = csv_table(source, lines)
    id_i, start_i, end_i = (columns[name] for name in KINETICS_COLUMNS)
    label_i = columns.get("label")
    finder = _KineticsFinder(root)
    entries = []
    for number, cells in rows:
        stem = _kinetics_stem(source, number, cells[id_i], cells[start_i], cells[end_i])
        label = cells[label_i].strip() if label_i is not None else ""
        labels = (parser.index(label, number),) if label else ()
        entries.append(VideoEntry(stem, check_path(source, number, finder.find(stem + ".mp4", label)), labels, number))
    return entries


def _kinetics_stem(source: Path, number: int, youtube_id: str, start: str, end: str) -> str:
    """`{youtube_id}_{time_start:06d}_{time_end:06d}`: the stem of a Kinetics file name."""
    youtube_id, start, end = youtube_id.strip(), start.strip(), end.strip()
    if youtube_id and start.isdigit() and end.isdigit() and (start + end).isascii():
        return f"{youtube_id}_{start.lstrip('0').zfill(6)}_{end.lstrip('0').zfill(6)}"
    if not youtube_id:
        raise InputError(f"{location(source, number)}: row has no youtube_id")
    start_ok = start.isdigit() and start.isascii()
    column, value = ("time_end", end) if start_ok else ("time_start", start)
    raise InputError(
        f"{location(source, number)}: {column} {value!r} is not a whole number of seconds"
    )


class _KineticsFinder:
    """Finds `root/file`, `root/<label>/file` or `root/<label_with_underscores>/file`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_names = _listing(root)
        self.label_folders: dict[str, list[tuple[Path, frozenset[str]]]] = {}

    def _folders(self, label: str) -> list[tuple[Path, frozenset[str]]]:
        """(folder, file names) of the existing, non-empty class folders of `label`."""
        folders = self.label_folders.get(label)
        if folders is None:
            spellings = dict.fromkeys((label, label.replace(" ", "_")))
            listed = [(folder, _listing(folder)) for folder in map(self.root.joinpath, spellings)]
            folders = self.label_folders[label] = [(f, files) for f, files in listed if files]
        return folders

    def find(self, name: str, label: str) -> Path:
        """Where the file is, or `root/name` when it is nowhere."""
        if name not in self.root_names and label:
            for folder, names in self._folders(label):
                if name in names:
                    return folder / name
        return self.root / name


def _listing(folder: Path) -> frozenset[str]:
    """The names in a folder; empty when it cannot be listed."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()
