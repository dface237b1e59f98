"""Why a video cannot be decoded: the reasons, a backend's classified failure, the path check.

Failures raise `DecodeError` whose message starts with a short reason, one of `REASONS`: "file not
found", "no video stream", "zero frames", "corrupt or undecodable" (or "decoder unavailable" when a
backend is not installed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bike_cli.config.files import not_regular
from bike_cli.data.decoding.pyav_fast import PlanError
from bike_cli.errors import DecodeError

NOT_FOUND = "file not found"
NOT_READABLE = "not a readable file"
NO_VIDEO = "no video stream"
ZERO_FRAMES = "zero frames"
CORRUPT = "corrupt or undecodable"
UNAVAILABLE = "decoder unavailable"
# most specific first: the reason a DecodeError leads with when the two backends disagree
REASONS = (NOT_FOUND, NOT_READABLE, NO_VIDEO, ZERO_FRAMES, CORRUPT, UNAVAILABLE)

_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")  # "[18:26:17] /src/video_reader.cc:151: "


class BackendFailure(Exception):
    """One backend's failure on one file: a reason from REASONS and the backend's own words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@contextmanager
def as_failure() -> Iterator[None]:
    """Turn a decoder library's exception into a classified BackendFailure (one passes through).

    Wrap decoder calls only, never the caller's `choose_indices`, whose errors must propagate."""
    try:
        yield
    except (BackendFailure, PlanError):  # PlanError: pyav_fast's own signal to decode sequentially
        raise
    except Exception as exc:  # decord: DECORDError/RuntimeError; PyAV: FFmpegError, EOFError, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = _DECORD_PREFIX.sub("", lines[0])[:300]
        reason = NO_VIDEO if "cannot find video stream" in detail else CORRUPT
        raise BackendFailure(reason, detail) from exc


def check_video_file(path: Path) -> None:
    """DecodeError for a path that is missing, a folder, unreadable or not even a valid name.

    Any OS error (a name too long for the file system, no permission, an I/O error) is the
    video's failure, recorded as a skip, never the run's. A FIFO or a device is one too, found
    before the open that would block on it."""
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
