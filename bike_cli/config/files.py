"""What a path is, and the check every file bike reads passes first: it is a regular file (a FIFO would
block its reader, `/dev/zero` never end; docs/formats.md)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bike_cli.errors import InputError

REGULAR = "a regular file"
FOLDER = "a folder"
_KINDS = ((stat.S_ISREG, REGULAR), (stat.S_ISDIR, FOLDER), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(path: str | Path) -> str | None:
    """What `path` is after following symlinks ("a regular file", "a folder", "a FIFO (named pipe)",
    "a character device", ...), or None where nothing is (a missing file, a dangling symlink)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "a special file")


def not_regular(path: str | Path, what: str, *, folders: bool = False) -> str | None:
    """The message for `what` `path` when it exists and is not a regular file (nor a folder, with
    `folders`); None when it is one, or when nothing is there (the reader says "not found")."""
    kind = file_kind(path)
    if kind is None or kind == REGULAR or (folders and kind == FOLDER):
        return None
    return f"{what} {path} is {kind}, not a regular file"


def check_regular_file(path: str | Path, what: str) -> Path:
    """`path`, after checking it is a regular file; InputError naming `what` and what it is instead."""
    if file_kind(path) is None:
        raise InputError(f"{what} not found: {path}")
    if (problem := not_regular(path, what)) is not None:
        raise InputError(problem)
    return Path(path)
