"""The entries of a video list, and the checks every entry passes (a usable path, a unique id, one
entry per video file)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bike_cli.errors import InputError, location

log = logging.getLogger(__name__)

MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4096  # Linux's NAME_MAX and PATH_MAX


@dataclass(frozen=True)
class VideoEntry:
    """One video of a list."""

    video_id: str  # unique key: the path as written in the list (Kinetics: the file stem)
    path: Path  # resolved file path
    labels: tuple[int, ...]  # class indices; () when unknown
    line: int  # 1-based line number in the list file (for messages)


@dataclass(frozen=True)
class VideoList:
    """The videos of a list file, in file order."""

    entries: list[VideoEntry]
    source: Path
    format: str  # 'text' | 'csv' | 'kinetics'
    multilabel: bool  # True when any entry has more than one label

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> VideoEntry:
        return self.entries[index]


def labels_array(entries: Sequence[VideoEntry], num_classes: int, multilabel: bool) -> np.ndarray:
    """The entries' labels: int64 [n] (-1 when unknown), or uint8 multi-hot [n, K] when `multilabel`."""
    if not multilabel:
        return np.array([e.labels[0] if e.labels else -1 for e in entries], dtype=np.int64)
    hot = np.zeros((len(entries), num_classes), dtype=np.uint8)  # [n, K]
    for row, e in enumerate(entries):
        hot[row, list(e.labels)] = 1
    return hot


def check_path(source: Path, number: int, path: Path) -> Path:
    """`path`, after checking it is a name the file system can take; InputError naming file:line."""
    text = str(path)
    where = location(source, number)
    if "\0" in text:
        raise InputError(f"{where}: the path {text!r} holds a NUL byte")
    if len(text) > MAX_NAME_BYTES // 4:  # shorter names cannot exceed the limits, even in 4-byte UTF-8
        if len(os.fsencode(text)) > MAX_PATH_BYTES:
            raise InputError(f"{where}: the path is longer than {MAX_PATH_BYTES} bytes ({text[:80]!r}...)")
        long = next((part for part in path.parts if len(os.fsencode(part)) > MAX_NAME_BYTES), None)
        if long is not None:
            raise InputError(f"{where}: the path component {long[:60]!r}... is longer than {MAX_NAME_BYTES} bytes")
    return path


def check_unique_videos(source: Path, entries: list[VideoEntry]) -> list[VideoEntry]:
    """The entries, each video file once: InputError naming both lines when a video id appears twice;
    the same file under other spellings (`../x.mp4`, `/abs/x.mp4`, `v/../x.mp4`) is kept at its first
    line, with one warning naming the lines and spellings (an error where their labels differ)."""
    seen: dict[str, int] = {}
    for entry in entries:
        first = seen.setdefault(entry.video_id, entry.line)
        if first != entry.line:
            raise InputError(
                f"{location(source, entry.line)}: video {entry.video_id!r} is listed twice "
                f"(lines {first} and {entry.line})"
            )
    files: dict[str, list[VideoEntry]] = {}
    folders: dict[str, str] = {}  # resolved once per folder: a list has few folders and many videos
    for entry in entries:
        folder, name = os.path.split(entry.path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        files.setdefault(os.path.join(folders[folder], name), []).append(entry)
    if len(files) == len(entries):
        return entries
    dropped = set()
    for spellings in (group for group in files.values() if len(group) > 1):
        _warn_respelled(source, spellings)
        dropped.update(id(entry) for entry in spellings[1:])
    return [entry for entry in entries if id(entry) not in dropped]


def _warn_respelled(source: Path, spellings: list[VideoEntry]) -> None:
    """Warn that one file is listed under several spellings; InputError where their labels differ."""
    first, *others = spellings
    lines = [str(e.line) for e in spellings]
    named = f"lines {', '.join(lines[:-1])} and {lines[-1]}"
    written = ", ".join(repr(e.video_id) for e in spellings)
    conflict = next((e for e in others if e.labels != first.labels), None)
    if conflict is not None:
        raise InputError(f"{location(source, conflict.line)}: {written} are one video ({first.path}) with "
                         f"different labels ({named})")
    log.warning("%s: %s name one video under %d spellings (%s): read once, as %r (line %d)", source, named,
                len(spellings), written, first.video_id, first.line)
