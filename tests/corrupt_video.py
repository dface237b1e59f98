"""A test helper: a `.mp4` file that no decoder can read."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_corrupt_video(path: str | Path) -> Path:
    """Write a `.mp4` file that no decoder can read: an MP4 'ftyp' box, then random bytes."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    junk = np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    # the 'ftyp' box real .mp4 files start with, so the file looks like MP4 until the demuxer reads on
    ftyp = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    out.write_bytes(ftyp + junk)
    return out
