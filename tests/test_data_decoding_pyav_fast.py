"""The PyAV path decodes less (non-reference frames skipped, closed GOPs jumped to) and returns frames
bit-identical to a full sequential decode: on every shared clip, for the samplings the stages use."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import av
import numpy as np
import pytest

from bike_cli.data.decoding import pyav_backend
from bike_cli.data.decoding.frames import PlanError, resized_size
from bike_cli.data.decoding.pyav_backend import FALLBACKS, decode_kept, read_packets, to_rgb, upright_hw
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import segment_indices, video_seed
from bike_cli.data.synthetic import write_video

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
VIDEO_CLIPS = sorted(p.name for p in CLIPS.glob("*") if p.suffix in (".mp4", ".webm", ".avi", ".mkv", ".mov"))
needs_clips = pytest.mark.skipif(not VIDEO_CLIPS, reason=f"real clips not found at {CLIPS}")
SAMPLINGS = [(8, "test", 1), (16, "test", 1), (8, "train", 1), (16, "train", 1), (8, "test", 4)]


def full_decode(path: Path, short_side: int | None) -> list[np.ndarray]:
    """Every frame, decoded in order with nothing skipped, converted as the PyAV backend converts."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [to_rgb(f, resized_size(*upright_hw(f), short_side)) for f in frames]


def sampled(num_frames: int, frames: int, mode: str, clips: int, name: str) -> np.ndarray:
    rng = np.random.default_rng(video_seed(1, name)) if mode == "train" else None
    return segment_indices(num_frames, frames, mode=mode, clips=clips, rng=rng).ravel()


@needs_clips
@pytest.mark.parametrize("name", VIDEO_CLIPS)
def test_kept_frames_are_bit_identical_to_a_full_decode(name: str) -> None:
    path = CLIPS / name
    reference = full_decode(path, 224)
    for frames, mode, clips in SAMPLINGS:
        chooser = partial(sampled, frames=frames, mode=mode, clips=clips, name=name)
        clip = read_frames(path, chooser, short_side=224, decoder="pyav", fallback=False)
        wanted = np.minimum(sampled(clip.num_frames, frames, mode, clips, name), len(reference) - 1)
        assert clip.decoder == "pyav" and len(clip.frames) == len(wanted)
        for got, index in zip(clip.frames.numpy(), wanted):
            np.testing.assert_array_equal(got, reference[index], err_msg=f"{name} {frames} {mode}: frame {index}")


def plan(path: Path, wanted: set[int], **options) -> tuple[dict, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return decode_kept(stream, read_packets(container, stream), wanted, lambda f: f.to_ndarray(format="rgb24"),
                           **options)


@needs_clips
def test_long_gop_clip_decodes_fewer_frames_than_sequentially() -> None:
    path = CLIPS / "cleaning_pool.mp4"  # H.264 with B-frames, key frames at 0 and 235 of 300
    wanted = set(segment_indices(300, 8, mode="test").ravel().tolist())
    _, skipping = plan(path, wanted, jump=False)
    _, jumping = plan(path, wanted)
    assert jumping < skipping < max(wanted) + 1  # a full decode produces max(wanted) + 1 frames
    assert jumping <= 300 - 235 + 235 - (max(wanted) - 235)  # the frames between the GOPs' last kept ones skipped


@needs_clips
def test_packed_b_frames_are_caught_and_decoded_sequentially() -> None:
    path = CLIPS / "apply_eye_makeup.avi"  # MPEG-4 ASP with packed B-frames: pts do not order frames
    with pytest.raises(PlanError):
        plan(path, {10, 60, 150})
    clip = read_frames(path, lambda n: [150, 10, 60], decoder="pyav", fallback=False)
    reference = full_decode(path, None)
    for got, index in zip(clip.frames.numpy(), [150, 10, 60]):
        np.testing.assert_array_equal(got, reference[index])


def test_generated_video_frames_match_with_every_option(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (40, 64, 80, 3), dtype=np.uint8)
    with pytest.raises(PlanError):  # MPEG-4 part 2: not a codec the plan trusts
        plan(write_video(tmp_path / "noise_mpeg4.mp4", frames), {0, 7})
    path = write_video(tmp_path / "noise.mp4", frames, codec="libx264")  # x264's defaults: B-frames
    reference = full_decode(path, None)
    wanted = {0, 7, 19, 20, 39}
    for options in ({}, {"skip": False}, {"jump": False}, {"skip": False, "jump": False}):
        kept, decoded = plan(path, wanted, **options)
        assert sorted(kept) == sorted(wanted) and decoded <= len(reference)
        for index, rgb in kept.items():
            np.testing.assert_array_equal(rgb, reference[index].reshape(rgb.shape))


def _plannable(path: Path) -> bool:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = read_packets(container, stream)
        return packets.plannable and (stream.frames or len(packets.packets)) == len(packets.packets)


@needs_clips
@pytest.mark.parametrize("name", VIDEO_CLIPS)
def test_no_shared_clip_falls_back_from_its_plan(name: str) -> None:
    """A plan that broke would still give the right frames (decoded sequentially): count it instead."""
    path, before = CLIPS / name, FALLBACKS.snapshot()
    for frames, mode, clips in SAMPLINGS:
        chooser = partial(sampled, frames=frames, mode=mode, clips=clips, name=name)
        read_frames(path, chooser, short_side=224, decoder="pyav", fallback=False)
    after = FALLBACKS.snapshot()
    assert after["failed"] == before["failed"]
    unplanned = 0 if _plannable(path) else len(SAMPLINGS)  # AVI, MPEG-4 ASP: sequential by design
    assert after["unplanned"] - before["unplanned"] == unplanned


def test_a_failed_plan_is_counted_and_logged(tmp_path: Path, monkeypatch, caplog) -> None:
    frames = np.random.default_rng(1).integers(0, 255, (20, 64, 80, 3), dtype=np.uint8)
    path = write_video(tmp_path / "noise.mp4", frames, codec="libx264")
    reference = full_decode(path, None)

    def broken(*args, **kwargs):
        raise PlanError("frames [3] were not decoded")

    monkeypatch.setattr(pyav_backend, "decode_kept", broken)
    before = FALLBACKS.snapshot()
    with caplog.at_level(logging.WARNING, logger=pyav_backend.__name__):
        clip = read_frames(path, lambda n: [3, 11], decoder="pyav", fallback=False)
    after = FALLBACKS.snapshot()
    assert after == {"unplanned": before["unplanned"], "failed": before["failed"] + 1}
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and "plan failed" in caplog.text
    for got, index in zip(clip.frames.numpy(), [3, 11]):
        np.testing.assert_array_equal(got, reference[index])  # the same decoded frames, sequentially
