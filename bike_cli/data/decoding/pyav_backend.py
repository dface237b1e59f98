"""The PyAV backend (the default): decode only the kept frames and the reference frames they need.

Frames are bit-identical to a full sequential decode (see `pyav_fast`); measured 0.53-0.68x
decord's time on the shared clips by benchmarks/decode.py. Where timestamps do not allow that, the
video is decoded sequentially up to the highest index needed.

Rotated video (a display matrix in the container, e.g. phone video): PyAV exposes the rotation on
frames only; this backend turns its frames upright (display orientation), as decord does, so both
backends return the same upright frames and `DecodedClip.height`/`width` describe the frames
returned.

`probe` reads a video's frame count, upright frame size and frame rate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from bike_cli.data.decoding.failures import NO_VIDEO, ZERO_FRAMES, BackendFailure, as_failure, check_video_file
from bike_cli.data.decoding.frames import DecodedClip, IndexChooser, gather, requested_indices, resized_size
from bike_cli.data.decoding.pyav_fast import FALLBACKS, PlanError, decode_kept, read_packets
from bike_cli.errors import DecodeError

logger = logging.getLogger(__name__)


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream; BackendFailure when the container has none."""
    if not container.streams.video:
        raise BackendFailure(NO_VIDEO, "the container holds no video stream")
    return container.streams.video[0]


def _rotation_steps(frame: av.VideoFrame) -> int:
    """Quarter turns counter-clockwise (np.rot90's k) that make a PyAV frame upright."""
    return int(round(frame.rotation / 90)) % 4


def upright_hw(frame: av.VideoFrame) -> tuple[int, int]:
    """(H, W) of a PyAV frame once rotated upright."""
    return (frame.width, frame.height) if _rotation_steps(frame) % 2 else (frame.height, frame.width)


def upright_size(path: Path) -> tuple[int, int]:
    """(H, W) of the first frame once upright. Decodes that one frame: PyAV exposes the display
    rotation on frames only (a few ms, on top of ~1-5 ms to read the header)."""
    with as_failure(), av.open(str(path)) as container:
        frame = next(container.decode(video_stream(container)), None)
    if frame is None:
        raise BackendFailure(ZERO_FRAMES, "no frame could be decoded")
    return upright_hw(frame)


def pyav_frame_count(path: Path, stream: av.video.stream.VideoStream) -> int:
    """The container's frame count if it has one (webm/mkv often do not), else the video packets
    counted by demuxing a second opening of the file, without decoding."""
    if stream.frames > 0:
        return stream.frames
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video_stream(container)) if packet.size)


def to_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """Upright rgb24 array [H, W, 3] of `frame`, scaled while converting to `size` (upright H, W)."""
    steps = _rotation_steps(frame)
    height, width = size[::-1] if steps % 2 else size  # the coded orientation
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BILINEAR")
    return np.ascontiguousarray(np.rot90(rgb, steps)) if steps else rgb


def decode_sequentially(
    stream_frames: Iterator[av.VideoFrame], wanted: set[int], short_side: int | None, resize: str = "shortest"
) -> tuple[dict[int, np.ndarray], int]:
    """Decode in order up to max(wanted); keep the wanted frames as rgb [H, W, 3], plus the last one
    decoded when the video ends early. Returns ({index: rgb}, frames decoded)."""
    top, kept, decoded, last, size = max(wanted), {}, 0, None, (0, 0)
    for last in stream_frames:
        if decoded == 0:
            size = resized_size(*upright_hw(last), short_side, resize)
        if decoded in wanted:
            kept[decoded] = to_rgb(last, size)
        decoded += 1
        if decoded > top:
            break
    if last is None:
        raise BackendFailure(ZERO_FRAMES, "no frame could be decoded")
    if decoded <= top:  # fewer frames than counted: indices past the end read the last frame
        kept[decoded - 1] = to_rgb(last, size)
    return kept, decoded


def read_pyav(
    path: Path, choose_indices: IndexChooser, short_side: int | None, num_threads: int, resize: str
) -> DecodedClip:
    """PyAV backend: decode only what the kept frames need (`pyav_fast`: the same frames as a full
    decode), or, where timestamps do not allow that, sequentially up to the highest index needed."""
    with as_failure():
        container = av.open(str(path))
    with container:
        with as_failure():
            stream = video_stream(container)
            _threads(stream, num_threads)
            packets = read_packets(container, stream)
        num_frames = stream.frames or len(packets.packets)
        if num_frames == 0:
            raise BackendFailure(ZERO_FRAMES, "the video stream holds no frames")
        requested = requested_indices(choose_indices, num_frames)
        wanted = set(requested.tolist())
        convert = lambda frame: to_rgb(frame, resized_size(*upright_hw(frame), short_side, resize))  # noqa: E731
        planned = packets.plannable and num_frames == len(packets.packets)
        try:
            if num_frames != len(packets.packets):
                raise PlanError("the container's frame count differs from its packets")
            with as_failure():
                kept, decoded = decode_kept(stream, packets, wanted, convert)
        except PlanError as why:
            FALLBACKS.count(planned)
            (logger.warning if planned else logger.debug)(
                "%s: %sdecoding sequentially (%s)", path, "the decode plan failed; " if planned else "", why)
            with as_failure(), av.open(str(path)) as again:
                _threads(again.streams.video[0], num_threads)
                kept, decoded = decode_sequentially(again.decode(video=0), wanted, short_side, resize)
            decoded -= 1  # the highest index decoded
        else:
            decoded = num_frames - 1
    frames = gather(requested, decoded, lambda unique: np.stack([kept[i] for i in unique]))
    return DecodedClip(frames, num_frames, "pyav", frames.shape[1], frames.shape[2])


def _threads(stream: av.video.stream.VideoStream, num_threads: int) -> None:
    """Let the decoder use `num_threads` threads (0: FFmpeg decides), frame and slice threading."""
    stream.thread_type = "AUTO"  # frame and slice threads
    stream.codec_context.thread_count = num_threads


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
