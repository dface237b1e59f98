"""What both backends share: the clip they return, the output size, the requested indices, and why a
video fails (`REASONS`, `BackendFailure`, `check_video_file`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bike_cli.config.files import not_regular
from bike_cli.errors import DecodeError, InputError

IndexChooser = Callable[[int], Sequence[int]]

NOT_FOUND = "file not found"
NOT_READABLE = "not a readable file"
NO_VIDEO = "no video stream"
ZERO_FRAMES = "zero frames"
CORRUPT = "corrupt or undecodable"
UNAVAILABLE = "decoder unavailable"
# most specific first: the reason a DecodeError leads with when the two backends disagree
REASONS = (NOT_FOUND, NOT_READABLE, NO_VIDEO, ZERO_FRAMES, CORRUPT, UNAVAILABLE)

_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")  # "[18:26:17] /src/video_reader.cc:151: "


@dataclass
class DecodedClip:
    """Frames decoded from one video, in the order of the requested indices."""

    frames: torch.Tensor  # uint8 [N, H, W, 3]
    num_frames: int  # frames in the video as the backend counted them
    decoder: str  # 'decord' or 'pyav'
    height: int  # H of `frames`
    width: int  # W of `frames`


class BackendFailure(Exception):
    """One backend's failure on one file: a reason from REASONS and the backend's own words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PlanError(Exception):
    """The packets do not allow timestamp matching (`pyav_backend.decode_kept`); decode sequentially instead."""


@contextmanager
def as_failure() -> Iterator[None]:
    """Turn a decoder library's exception into a classified BackendFailure (one passes through).

    Wrap decoder calls only, never the caller's `choose_indices`, whose errors must propagate."""
    try:
        yield
    except (BackendFailure, PlanError):  # PlanError: the PyAV plan's own signal to decode sequentially
        raise
    except Exception as exc:  # decord: DECORDError/RuntimeError; PyAV: FFmpegError, EOFError, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = _DECORD_PREFIX.sub("", lines[0])[:300]
        reason = NO_VIDEO if "cannot find video stream" in detail else CORRUPT
        raise BackendFailure(reason, detail) from exc


def check_video_file(path: Path) -> None:
    """DecodeError for a path that is missing, a folder, unreadable or not even a valid name.

    Any OS error is the video's failure (a recorded skip), never the run's; a FIFO or a device is
    found before the open that would block on it."""
    if (problem := not_regular(path, f"{NOT_READABLE}:", folders=True)) is not None:
        raise DecodeError(problem)
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise DecodeError(f"{NOT_FOUND}: {path}") from None
    except IsADirectoryError:
        raise DecodeError(f"{NOT_READABLE}: {path} is a folder, not a video file") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the name
        raise DecodeError(f"{NOT_READABLE}: {path} ({getattr(err, 'strerror', None) or err})") from None


def resized_size(height: int, width: int, short_side: int | None, resize: str = "shortest") -> tuple[int, int]:
    """(H, W) with the shorter side equal to `short_side` and the aspect kept (long side rounded);
    `resize="squash"`: `short_side` x `short_side`; `"longest"`: the longer side equal to it."""
    if short_side is None:
        return height, width
    if resize == "squash":
        return short_side, short_side
    if resize == "longest":
        if height >= width:
            return short_side, max(1, int(width * short_side / height + 0.5))
        return max(1, int(height * short_side / width + 0.5)), short_side
    if height <= width:
        return short_side, int(width * short_side / height + 0.5)
    return int(height * short_side / width + 0.5), short_side


def requested_indices(choose_indices: IndexChooser, num_frames: int) -> np.ndarray:
    """Call the sampler with the frame count; return its indices [N] clamped to num_frames - 1."""
    indices = np.asarray(choose_indices(num_frames))
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise InputError(f"choose_indices({num_frames}) must return a non-empty list of ints, got {indices!r}")
    if indices.min() < 0:
        raise InputError(f"choose_indices({num_frames}) returned a negative index: {indices.tolist()}")
    return np.minimum(indices.astype(np.int64), num_frames - 1)


def gather(
    requested: np.ndarray, limit: int, fetch: Callable[[list[int]], np.ndarray]
) -> torch.Tensor:
    """Fetch each distinct index (clamped to `limit`) once, in sorted order, with one `fetch` call;
    return the frames [N, H, W, 3] in the order of `requested`."""
    unique, inverse = np.unique(np.minimum(requested, limit), return_inverse=True)
    batch = torch.from_numpy(np.ascontiguousarray(fetch(unique.tolist())))  # [U, H, W, 3]
    return batch[torch.from_numpy(inverse.reshape(-1))]
