"""Decode only what the kept frames need, with frames bit-identical to a full sequential decode.

Two savings over decoding every frame up to the last one kept (PyAV, one pass over the packets):
- non-reference frames that are not kept are not decoded (`skip_frame = "NONREF"` while their
  packet is sent; "DEFAULT" for the packets of kept frames). No other frame refers to them, so the
  frames that are decoded come out exactly as in a full decode;
- where the next kept frame lies past a later key frame that starts a closed GOP (no frame after it
  in decode order is shown before it), decoding jumps there: the decoder is drained and flushed and
  the packets in between are not sent at all.

Frames are matched to indices by their timestamps (index = rank of the packet's pts). Where that is
not known to be sound (a codec outside `PLANNED_CODECS`, an AVI file, whose timestamps are decode
times, a packet without pts, repeated pts, a container frame count that differs from the packets, or
decoded pts that go backwards) `PlanError` is raised and the caller decodes sequentially. The caller
counts each such fallback in `FALLBACKS` (per process): `unplanned` where the packets were known not to
allow a plan (by design: AVI, untrusted codecs), `failed` where a plan was tried and broke mid-decode
(which the caller also logs as a warning: the frames stay right, only slower).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import av
import numpy as np

# codecs whose decoders skip only frames nothing refers to, in containers whose timestamps order the
# frames (not AVI: its timestamps are decode times; MPEG-4 ASP's packed B-frames come out of order)
PLANNED_CODECS = ("h264", "hevc", "vp8", "vp9", "av1")
GOP_LOOKAHEAD = 16  # packets after a key frame checked for frames shown before it (an open GOP)


class PlanError(Exception):
    """The packets do not allow timestamp matching; decode sequentially instead."""


@dataclass
class PlanFallbacks:
    """How many videos this process decoded sequentially instead of by plan, by kind (module docstring)."""

    unplanned: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, planned: bool) -> None:
        """One more fallback: `failed` when a plan had been tried (`planned`), else `unplanned`."""
        with self._lock:
            if planned:
                self.failed += 1
            else:
                self.unplanned += 1

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
