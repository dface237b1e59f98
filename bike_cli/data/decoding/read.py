"""The front of decoding (`read_frames`): checks, the backend asked for, the fallback to the other, and
the DecodeError that leads with the most specific reason (`frames.REASONS`) and names each backend's."""

from __future__ import annotations

import logging
from pathlib import Path

from bike_cli.config.stages import DEFAULT_DECODER
from bike_cli.data.decoding.decord_backend import read_decord
from bike_cli.data.decoding.frames import REASONS, BackendFailure, DecodedClip, IndexChooser, check_video_file
from bike_cli.data.decoding.pyav_backend import read_pyav
from bike_cli.errors import DecodeError, InputError

logger = logging.getLogger(__name__)

DECODERS = ("decord", "pyav")

_BACKENDS = {"decord": read_decord, "pyav": read_pyav}


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
    """Decode the frames `choose_indices(num_frames)` asks for (any order, repeats allowed), each distinct
    index once; indices past the end are clamped to the last frame. `short_side`: resize while decoding
    (None: the original size; `resize`, one of the model's modes: `resized_size`). `num_threads`: decoder
    threads (0: the library decides). With `fallback` a file the chosen backend fails on is tried with the
    other. DecodeError starts with the reason (REASONS) and names the path and each backend's error."""
    if decoder not in DECODERS:
        raise InputError(f"unknown decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    if short_side is not None and short_side < 1:
        raise InputError(f"short_side must be a positive number of pixels, got {short_side}")
    if num_threads < 0:  # benchmarks/decode.py --threads
        raise InputError(f"num_threads must be >= 0 (0: automatic), got {num_threads}")
    path = Path(path)
    check_video_file(path)
    failures: dict[str, BackendFailure] = {}
    for name in [decoder] + [other for other in DECODERS if other != decoder and fallback]:
        try:
            clip = _BACKENDS[name](path, choose_indices, short_side, num_threads, resize)
        except BackendFailure as failure:
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
