"""Decode only the frames a sampler asks for, with one batched decoder call per video.

Two backends: PyAV (default; decodes only the kept frames and the reference frames they need, with
frames bit-identical to a full sequential decode: see `fast_decode`; measured 0.53-0.68x decord's time
on the shared clips by benchmarks/decode.py) and decord (`VideoReader.get_batch` on the sorted
distinct indices). With `fallback=True` a file the chosen backend cannot read is tried with the other one. Failures raise `DecodeError` whose message starts with a
short reason, one of `REASONS`: "file not found", "no video stream", "zero frames", "corrupt or
undecodable" (or "decoder unavailable" when a backend is not installed).

Rotated video (a display matrix in the container, e.g. phone video): decord applies the rotation
itself, so frames come back upright (display orientation; a 90-degree clip coded 568x320 comes back
H=568, W=320) and its `width=`/`height=` resize arguments refer to that upright size. The PyAV
backend rotates its frames the same way, so both backends return the same upright frames and
`DecodedClip.height`/`width` always describe the frames returned.

Known decord limits: readers must be opened in the process that uses them (this module opens one
per call); `len(vr)` can over-report (indices are clamped and the tail is retried lower); resizing to
some small widths (2-16, 24, 48, 72 px) fails inside decord, which the fallback covers; on an AVI with
packed B-frames, `get_batch` sometimes returns a wrong *last* frame (no error is raised).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import torch

from bike_cli.data.fast_decode import PlanError, decode_kept, read_packets
from bike_cli.errors import DecodeError, InputError

if TYPE_CHECKING:
    import decord

logger = logging.getLogger(__name__)

DECODERS = ("decord", "pyav")
DEFAULT_DECODER = "pyav"
RESIZES = ("shortest", "squash", "longest")

NOT_FOUND = "file not found"
NOT_READABLE = "not a readable file"
NO_VIDEO = "no video stream"
ZERO_FRAMES = "zero frames"
CORRUPT = "corrupt or undecodable"
UNAVAILABLE = "decoder unavailable"
# most specific first: the reason a DecodeError leads with when the two backends disagree
REASONS = (NOT_FOUND, NOT_READABLE, NO_VIDEO, ZERO_FRAMES, CORRUPT, UNAVAILABLE)

_TAIL_RETRIES = 4  # decord: lower the last index allowed to n-2, n-3, n-5, n-9 before giving up
_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")  # "[18:26:17] /src/video_reader.cc:151: "


@dataclass
class DecodedClip:
    """Frames decoded from one video, in the order of the requested indices."""

    frames: torch.Tensor  # uint8 [N, H, W, 3]
    num_frames: int  # frames in the video as the backend counted them
    decoder: str  # 'decord' or 'pyav'
    height: int  # H of `frames`
    width: int  # W of `frames`


@dataclass
class VideoInfo:
    """Frame count, upright frame size and frame rate of a video (read with PyAV)."""

    num_frames: int
    height: int
    width: int
    fps: float


IndexChooser = Callable[[int], Sequence[int]]


class _Failure(Exception):
    """One backend's failure on one file: a reason from REASONS and the backend's own words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@contextmanager
def _as_failure() -> Iterator[None]:
    """Turn a decoder library's exception into a classified _Failure (a _Failure passes through).

    Wrap decoder calls only, never the caller's `choose_indices`, whose errors must propagate."""
    try:
        yield
    except (_Failure, PlanError):  # PlanError: fast_decode's own signal to decode sequentially
        raise
    except Exception as exc:  # decord: DECORDError/RuntimeError; PyAV: FFmpegError, EOFError, ...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = _DECORD_PREFIX.sub("", lines[0])[:300]
        reason = NO_VIDEO if "cannot find video stream" in detail else CORRUPT
        raise _Failure(reason, detail) from exc


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


def _requested_indices(choose_indices: IndexChooser, num_frames: int) -> np.ndarray:
    """Call the sampler with the frame count; return its indices [N] clamped to num_frames - 1."""
    indices = np.asarray(choose_indices(num_frames))
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise InputError(
            f"choose_indices({num_frames}) must return a non-empty list of ints, got {indices!r}"
        )
    if indices.min() < 0:
        raise InputError(f"choose_indices({num_frames}) returned a negative index: {indices.tolist()}")
    return np.minimum(indices.astype(np.int64), num_frames - 1)


def _gather(
    requested: np.ndarray, limit: int, fetch: Callable[[list[int]], np.ndarray]
) -> torch.Tensor:
    """Fetch each distinct index (clamped to `limit`) once, in sorted order, with one `fetch` call;
    return the frames [N, H, W, 3] in the order of `requested`."""
    unique, inverse = np.unique(np.minimum(requested, limit), return_inverse=True)
    batch = torch.from_numpy(np.ascontiguousarray(fetch(unique.tolist())))  # [U, H, W, 3]
    return batch[torch.from_numpy(inverse.reshape(-1))]


# ---------------------------------------------------------------------------------------- PyAV


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise _Failure(NO_VIDEO, "the container holds no video stream")
    return container.streams.video[0]


def _rotation_steps(frame: av.VideoFrame) -> int:
    """Quarter turns counter-clockwise (np.rot90's k) that make a PyAV frame upright."""
    return int(round(frame.rotation / 90)) % 4


def _upright_hw(frame: av.VideoFrame) -> tuple[int, int]:
    """(H, W) of a PyAV frame once rotated upright."""
    return (frame.width, frame.height) if _rotation_steps(frame) % 2 else (frame.height, frame.width)


def _upright_size(path: Path) -> tuple[int, int]:
    """(H, W) of the first frame once upright. Decodes that one frame: PyAV exposes the display
    rotation on frames only (a few ms, on top of ~1-5 ms to read the header)."""
    with _as_failure(), av.open(str(path)) as container:
        frame = next(container.decode(_video_stream(container)), None)
    if frame is None:
        raise _Failure(ZERO_FRAMES, "no frame could be decoded")
    return _upright_hw(frame)


def _pyav_frame_count(path: Path, stream: av.video.stream.VideoStream) -> int:
    """The container's frame count if it has one (webm/mkv often do not), else the video packets
    counted by demuxing a second opening of the file, without decoding."""
    if stream.frames > 0:
        return stream.frames
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(_video_stream(container)) if packet.size)


def check_video_file(path: Path) -> None:
    """DecodeError for a path that is missing, a folder, unreadable or not even a valid name.

    Any OS error (a name too long for the file system, no permission, an I/O error) is the
    video's failure, recorded as a skip, never the run's."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise DecodeError(f"{NOT_FOUND}: {path}") from None
    except IsADirectoryError:
        raise DecodeError(f"{NOT_READABLE}: {path} is a folder") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the name
        raise DecodeError(f"{NOT_READABLE}: {path} ({getattr(err, 'strerror', None) or err})") from None


def probe(path: str | Path) -> VideoInfo:
    """Frame count, upright size and fps of a video, read with PyAV."""
    path = Path(path)
    check_video_file(path)
    try:
        height, width = _upright_size(path)
        with _as_failure(), av.open(str(path)) as container:
            stream = _video_stream(container)
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            num_frames = _pyav_frame_count(path, stream)
    except _Failure as failure:
        raise DecodeError(f"{failure.reason}: {path} (pyav: {failure.detail})") from None
    return VideoInfo(num_frames, height, width, fps)


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """Upright rgb24 array [H, W, 3] of `frame`, scaled while converting to `size` (upright H, W)."""
    steps = _rotation_steps(frame)
    height, width = size[::-1] if steps % 2 else size  # the coded orientation
    rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BILINEAR")
    return np.ascontiguousarray(np.rot90(rgb, steps)) if steps else rgb


def _decode_sequentially(
    stream_frames: Iterator[av.VideoFrame], wanted: set[int], short_side: int | None, resize: str = "shortest"
) -> tuple[dict[int, np.ndarray], int]:
    """Decode in order up to max(wanted); keep the wanted frames as rgb [H, W, 3], plus the last one
    decoded when the video ends early. Returns ({index: rgb}, frames decoded)."""
    top, kept, decoded, last, size = max(wanted), {}, 0, None, (0, 0)
    for last in stream_frames:
        if decoded == 0:
            size = resized_size(*_upright_hw(last), short_side, resize)
        if decoded in wanted:
            kept[decoded] = _to_rgb(last, size)
        decoded += 1
        if decoded > top:
            break
    if last is None:
        raise _Failure(ZERO_FRAMES, "no frame could be decoded")
    if decoded <= top:  # fewer frames than counted: indices past the end read the last frame
        kept[decoded - 1] = _to_rgb(last, size)
    return kept, decoded


def _read_pyav(
    path: Path, choose_indices: IndexChooser, short_side: int | None, num_threads: int, resize: str
) -> DecodedClip:
    """PyAV backend: decode only what the kept frames need (`fast_decode`: the same frames as a full
    decode), or, where timestamps do not allow that, sequentially up to the highest index needed."""
    with _as_failure():
        container = av.open(str(path))
    with container:
        with _as_failure():
            stream = _video_stream(container)
            _threads(stream, num_threads)
            packets = read_packets(container, stream)
        num_frames = stream.frames or len(packets.packets)
        if num_frames == 0:
            raise _Failure(ZERO_FRAMES, "the video stream holds no frames")
        requested = _requested_indices(choose_indices, num_frames)
        wanted = set(requested.tolist())
        convert = lambda frame: _to_rgb(frame, resized_size(*_upright_hw(frame), short_side, resize))  # noqa: E731
        try:
            if num_frames != len(packets.packets):
                raise PlanError("the container's frame count differs from its packets")
            with _as_failure():
                kept, decoded = decode_kept(stream, packets, wanted, convert)
        except PlanError as why:
            logger.debug("%s: decoding sequentially (%s)", path, why)
            with _as_failure(), av.open(str(path)) as again:
                _threads(again.streams.video[0], num_threads)
                kept, decoded = _decode_sequentially(again.decode(video=0), wanted, short_side, resize)
            decoded -= 1  # the highest index decoded
        else:
            decoded = num_frames - 1
    frames = _gather(requested, decoded, lambda unique: np.stack([kept[i] for i in unique]))
    return DecodedClip(frames, num_frames, "pyav", frames.shape[1], frames.shape[2])


def _threads(stream: av.video.stream.VideoStream, num_threads: int) -> None:
    stream.thread_type = "AUTO"  # frame and slice threads
    stream.codec_context.thread_count = num_threads


# -------------------------------------------------------------------------------------- decord


def _decord_batch(
    path: Path, reader: decord.VideoReader, requested: np.ndarray, num_frames: int
) -> torch.Tensor:
    """One `get_batch` of the distinct requested indices; when it fails and the request reaches the
    last frames (len(vr) can over-report), retry with the last allowed index lowered."""
    limit, attempt = num_frames - 1, 0
    while True:
        try:
            with _as_failure():
                return _gather(requested, limit, lambda unique: reader.get_batch(unique).asnumpy())
        except _Failure as failure:
            next_limit = num_frames - 1 - 2**attempt
            attempt += 1
            if attempt > _TAIL_RETRIES or next_limit < 0 or requested.max() <= next_limit:
                raise
            logger.debug(
                "%s: decord failed up to frame %d (%s); retrying up to %d", path, limit, failure, next_limit
            )
            limit = next_limit


def _read_decord(
    path: Path, choose_indices: IndexChooser, short_side: int | None, num_threads: int, resize: str
) -> DecodedClip:
    """decord backend: a reader opened here (never shared across fork), resizing while decoding."""
    try:
        import decord  # noqa: F811 - imported here so that PyAV alone still works
    except ImportError as exc:  # e.g. no wheel for macOS arm64
        raise _Failure(UNAVAILABLE, f"decord cannot be imported ({exc})") from exc
    height, width = -1, -1  # decord: keep the original size
    if short_side is not None:  # decord's width=/height= need the original size: ask PyAV first
        try:
            height, width = resized_size(*_upright_size(path), short_side, resize)
        except _Failure as failure:
            detail = f"probing the size with PyAV: {failure.detail}"
            raise _Failure(failure.reason, detail) from failure
    with _as_failure():
        reader = decord.VideoReader(
            str(path), ctx=decord.cpu(0), width=width, height=height, num_threads=num_threads
        )
        num_frames = len(reader)
    if num_frames == 0:
        raise _Failure(ZERO_FRAMES, "decord counted no frames")
    requested = _requested_indices(choose_indices, num_frames)
    frames = _decord_batch(path, reader, requested, num_frames)
    return DecodedClip(frames, num_frames, "decord", frames.shape[1], frames.shape[2])


_BACKENDS = {"decord": _read_decord, "pyav": _read_pyav}


def read_frames(
    path: str | Path,
    choose_indices: IndexChooser,
    *,
    short_side: int | None = None,
    decoder: str = DEFAULT_DECODER,
    fallback: bool = True,
    num_threads: int = 1,
    resize: str = "shortest",
) -> DecodedClip:
    """Decode the frames `choose_indices(num_frames)` asks for (any order, repeats allowed).

    Each distinct index is decoded once; indices past the end are clamped to the last frame.
    `short_side` resizes while decoding so the shorter side has that length (aspect kept; None keeps
    the original size; `resize` "squash" / "longest": see `resized_size`). `num_threads`: decoder
    threads (0: the library decides). With `fallback` a file the chosen backend fails on is tried
    with the other one. Raises DecodeError whose message
    starts with the reason (see REASONS) and names the path and each backend's error.
    """
    if decoder not in DECODERS:
        raise InputError(f"unknown decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    if short_side is not None and short_side < 1:
        raise InputError(f"short_side must be a positive number of pixels, got {short_side}")
    if resize not in RESIZES:
        raise InputError(f"unknown resize mode {resize!r}: choose one of {', '.join(RESIZES)}")
    if num_threads < 0:
        raise InputError(f"num_threads must be >= 0 (0: automatic), got {num_threads}")
    path = Path(path)
    check_video_file(path)
    failures: dict[str, _Failure] = {}
    for name in [decoder] + [other for other in DECODERS if other != decoder and fallback]:
        try:
            clip = _BACKENDS[name](path, choose_indices, short_side, num_threads, resize)
        except _Failure as failure:
            failures[name] = failure
            continue
        if failures:
            logger.warning(
                "%s: %s failed (%s); decoded with %s instead", path, decoder, failures[decoder], name
            )
        return clip
    reason = min((failure.reason for failure in failures.values()), key=REASONS.index)
    details = "; ".join(f"{name}: {failure.detail}" for name, failure in failures.items())
    raise DecodeError(f"{reason}: {path} ({details})")
