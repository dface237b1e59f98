"""The sha256 of a file's bytes: a checkpoint's identity (`models.clip.ClipSpec`), a feature cache's
content (what its search index records, `search_index`). Read in blocks of 1 MiB, so that memory
stays small and a stop (SIGTERM, Ctrl-C) is acted on between blocks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

BLOCK = 1 << 20


def stream_sha256(stream: BinaryIO) -> str:
    """Hex sha256 of what `stream` holds from where it is to its end."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    with open(path, "rb") as f:
        return stream_sha256(f)
