"""A video's frame count, upright frame size and frame rate, read with PyAV (`probe`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from bike_cli.data.decoding.failures import BackendFailure, as_failure, check_video_file
from bike_cli.data.decoding.pyav_backend import pyav_frame_count, upright_size, video_stream
from bike_cli.errors import DecodeError


@dataclass
class VideoInfo:
    """Frame count, upright frame size and frame rate of a video (read with PyAV)."""

    num_frames: int
    height: int
    width: int
    fps: float


def probe(path: str | Path) -> VideoInfo:
    """Frame count, upright size and fps of a video, read with PyAV."""
    path = Path(path)
    check_video_file(path)
    try:
        height, width = upright_size(path)
        with as_failure(), av.open(str(path)) as container:
            stream = video_stream(container)
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            num_frames = pyav_frame_count(path, stream)
    except BackendFailure as failure:
        raise DecodeError(f"{failure.reason}: {path} (pyav: {failure.detail})") from None
    return VideoInfo(num_frames, height, width, fps)
