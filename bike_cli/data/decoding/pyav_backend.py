"""The PyAV backend (the default): decode only the kept frames and the reference frames they need,
bit-identical to a full sequential decode (0.53-0.68x decord's time, benchmarks/decode.py): non-reference
frames that are not kept are skipped (`skip_frame = "NONREF"`), and where a closed-GOP key frame lies
before the next kept frame the decoder is drained, flushed and jumps there.

Frames are matched to indices by timestamp (rank of the packet's pts). Where that is not known to be
sound (a codec outside `PLANNED_CODECS`, AVI's decode-time stamps, missing or repeated pts, a frame
count that differs from the packets, decoded pts going backwards) `PlanError` sends the video to a
sequential decode, counted in `FALLBACKS` per process (`failed`, also logged, where a plan broke
mid-decode; `unplanned` where none was possible). Rotated frames are turned upright, as decord does.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from bike_cli.data.decoding.frames import (
    NO_VIDEO,
    ZERO_FRAMES,
    BackendFailure,
    DecodedClip,
    IndexChooser,
    PlanError,
    as_failure,
    gather,
    requested_indices,
    resized_size,
)

logger = logging.getLogger(__name__)

# codecs whose decoders skip only frames nothing refers to, in containers whose timestamps order the
# frames (not AVI: its timestamps are decode times; MPEG-4 ASP's packed B-frames come out of order)
PLANNED_CODECS = ("h264", "hevc", "vp8", "vp9", "av1")
GOP_LOOKAHEAD = 16  # packets after a key frame checked for frames shown before it (an open GOP)


@dataclass
class PlanFallbacks:
    """How many videos this process decoded sequentially instead of by plan, by kind (module docstring)."""

    unplanned: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, planned: bool) -> None:
        """One more fallback: `failed` when a plan had been tried (`planned`), else `unplanned`."""
        with self._lock:
            self.failed += planned
            self.unplanned += not planned

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"unplanned": self.unplanned, "failed": self.failed}


FALLBACKS = PlanFallbacks()


@dataclass
class Packets:
    """A video stream's packets (held: a clip's are small), in decode order, with what the plan needs."""

    packets: list[av.Packet]
    index: dict[int, int]  # pts -> frame index (presentation order); empty when not plannable
    jumps: list[int]  # decode positions of key frames that start a closed GOP

    @property
    def plannable(self) -> bool:
        """Whether timestamps can match frames to indices (else: decode sequentially)."""
        return bool(self.index)


def read_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Packets:
    """Demux the whole stream (packets with data only, as the frame count counts them)."""
    packets = [p for p in container.demux(stream) if p.size]
    pts = [p.pts for p in packets]
    trusted = stream.codec_context.name in PLANNED_CODECS and "avi" not in container.format.name
    if not trusted or any(p is None for p in pts) or len(set(pts)) != len(pts):
        return Packets(packets, {}, [])  # timestamps cannot match frames to indices
    index = {p: i for i, p in enumerate(sorted(pts))}
    jumps = [i for i, p in enumerate(packets) if p.is_keyframe
             and all(q >= pts[i] for q in pts[i + 1 : i + 1 + GOP_LOOKAHEAD])]
    return Packets(packets, index, jumps)


def decode_kept(
    stream: av.video.stream.VideoStream, packets: Packets, wanted: set[int],
    convert: Callable[[av.VideoFrame], np.ndarray], skip: bool = True, jump: bool = True,
) -> tuple[dict[int, np.ndarray], int]:
    """({index: convert(frame)} for every wanted index, frames the decoder produced).

    `skip`: do not decode non-reference frames that are not kept; `jump`: skip to closed-GOP key frames."""
    if not packets.plannable:
        raise PlanError("packets without unique timestamps")
    codec = stream.codec_context
    position = {i: packets.index[p.pts] for i, p in enumerate(packets.packets)}  # decode pos -> index
    kept_at = sorted(pos for pos, idx in position.items() if idx in wanted)  # decode positions to keep
    kept: dict[int, np.ndarray] = {}
    state = {"decoded": 0, "last": -1}

    def take(frames: Iterable[av.VideoFrame]) -> None:
        """Record decoded frames: check their order, keep the wanted ones converted."""
        for frame in frames:
            index = packets.index.get(frame.pts, -1) if frame.pts is not None else -1
            if index <= state["last"]:
                raise PlanError(f"decoded timestamps are not increasing (pts {frame.pts})")
            state["decoded"], state["last"] = state["decoded"] + 1, index
            if index in wanted:
                kept[index] = convert(frame)

    pos, done = 0, 0  # next packet to send; kept packets sent so far
    while len(kept) < len(wanted):
        if done < len(kept_at) and jump:
            before = bisect.bisect_right(packets.jumps, kept_at[done]) - 1
            target = packets.jumps[before] if before >= 0 else -1
            if target > pos:  # a closed GOP starts after here and before the next kept frame
                take(codec.decode(None))
                codec.flush_buffers()
                pos, state["last"] = target, -1
        if pos >= len(packets.packets):
            take(codec.decode(None))
            break
        packet = packets.packets[pos]
        if skip:
            codec.skip_frame = "DEFAULT" if position[pos] in wanted else "NONREF"
        if done < len(kept_at) and kept_at[done] == pos:
            done += 1
        take(codec.decode(packet))
        pos += 1
    missing = wanted - kept.keys()
    if missing:
        raise PlanError(f"frames {sorted(missing)[:4]} were not decoded")
    return kept, state["decoded"]


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
    """PyAV backend: decode only what the kept frames need (`decode_kept`), else sequentially."""
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
