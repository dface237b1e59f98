"""The ``text`` (mmaction style) video-list format.

One video per line: ``relpath [label ...]``, whitespace separated. The first token is the path, so a
path cannot contain spaces in this format; every further token is a label (``relpath 3 7 12`` is
multi-label, a bare ``relpath`` has an unknown label). The old mmaction rawframes layout
``relpath total_frames label`` is not supported: its frame count would be read as a label.
"""

from __future__ import annotations

from pathlib import Path

from bike_cli.data.lists.entries import VideoEntry, check_path
from bike_cli.data.lists.labels import LabelParser


def parse_text(source: Path, lines: list[str], root: Path, parser: LabelParser) -> list[VideoEntry]:
    """Entries of an mmaction-style `relpath [label ...]` list."""
    entries = []
    for number, line in enumerate(lines, 1):
        parts = line.split(None, 1)
        if parts:
            video, labels = parts[0], parser.labels(parts[1] if len(parts) > 1 else "", number)
            entries.append(VideoEntry(video, check_path(source, number, root / video), labels, number))
    return entries
