"""The decord backend: `VideoReader.get_batch` on the sorted distinct indices, resizing while decoding.

Rotated video: decord applies the display rotation itself, so frames come back upright (a 90-degree
clip coded 568x320 comes back H=568, W=320) and its `width=`/`height=` resize arguments refer to
that upright size.

Known decord limits: readers must be opened in the process that uses them (this module opens one
per call); `len(vr)` can over-report (indices are clamped and the tail is retried lower); resizing to
some small widths (2-16, 24, 48, 72 px) fails inside decord, which the fallback covers; on an AVI with
packed B-frames, `get_batch` sometimes returns a wrong *last* frame (no error is raised).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bike_cli.data.decoding.frames import (
    UNAVAILABLE,
    ZERO_FRAMES,
    BackendFailure,
    DecodedClip,
    IndexChooser,
    as_failure,
    gather,
    requested_indices,
    resized_size,
)
from bike_cli.data.decoding.pyav_backend import upright_size

if TYPE_CHECKING:
    import decord

logger = logging.getLogger(__name__)

_TAIL_RETRIES = 4  # decord: lower the last index allowed to n-2, n-3, n-5, n-9 before giving up


def _decord_batch(
    path: Path, reader: decord.VideoReader, requested: np.ndarray, num_frames: int
) -> torch.Tensor:
    """One `get_batch` of the distinct requested indices; when it fails and the request reaches the
    last frames (len(vr) can over-report), retry with the last allowed index lowered."""
    limit, attempt = num_frames - 1, 0
    while True:
        try:
            with as_failure():
                return gather(requested, limit, lambda unique: reader.get_batch(unique).asnumpy())
        except BackendFailure as failure:
            next_limit = num_frames - 1 - 2**attempt
            attempt += 1
            if attempt > _TAIL_RETRIES or next_limit < 0 or requested.max() <= next_limit:
                raise
            logger.debug(
                "%s: decord failed up to frame %d (%s); retrying up to %d", path, limit, failure, next_limit
            )
            limit = next_limit


def read_decord(
    path: Path, choose_indices: IndexChooser, short_side: int | None, num_threads: int, resize: str
) -> DecodedClip:
    """decord backend: a reader opened here (never shared across fork), resizing while decoding."""
    try:
        import decord  # noqa: F811 - imported here so that PyAV alone still works
    except ImportError as exc:  # e.g. no wheel for macOS arm64
        raise BackendFailure(UNAVAILABLE, f"decord cannot be imported ({exc})") from exc
    height, width = -1, -1  # decord: keep the original size
    if short_side is not None:  # decord's width=/height= need the original size: ask PyAV first
        try:
            height, width = resized_size(*upright_size(path), short_side, resize)
        except BackendFailure as failure:
            detail = f"probing the size with PyAV: {failure.detail}"
            raise BackendFailure(failure.reason, detail) from failure
    with as_failure():
        reader = decord.VideoReader(
            str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=num_threads
        )
        num_frames = len(reader)
    if num_frames == 0:
        raise BackendFailure(ZERO_FRAMES, "decord counted no frames")
    requested = requested_indices(choose_indices, num_frames)
    frames = _decord_batch(path, reader, requested, num_frames)
    return DecodedClip(frames, num_frames, "decord", frames.shape[1], frames.shape[2])
