"""Tests for the bike_cli.data.decoding modules: the right frames, in order, at the right size, from both backends."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import torch
from corrupt_video import write_corrupt_video

from bike_cli.data.decoding.pyav_backend import upright_size
from bike_cli.data.decoding.read import DECODERS, read_frames
from bike_cli.data.synthetic import write_video
from bike_cli.errors import DecodeError, InputError

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
NUM_FRAMES = 24
GREY_STEP = 8  # frame k of the grey video is uniformly grey level GREY_STEP * k


def grey_frames(height: int, width: int) -> np.ndarray:
    """[T, H, W, 3]: frame k is uniformly GREY_STEP * k, so a decoded frame tells its own index."""
    levels = GREY_STEP * np.arange(NUM_FRAMES, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (NUM_FRAMES, height, width, 3)).copy()


def frame_indices(frames: torch.Tensor) -> list[int]:
    """The index each uniform grey frame [N, H, W, 3] encodes."""
    return [round(level / GREY_STEP) for level in frames.float().mean(dim=(1, 2, 3)).tolist()]


def pattern_frame(height: int, width: int) -> np.ndarray:
    """An asymmetric frame [H, W, 3]: horizontal/vertical ramps and a blue top-left block."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    frame[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    frame[: height // 4, : width // 4, 2] = 255
    return frame


@pytest.fixture(scope="module")
def grey_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("grey") / "grey.mp4", grey_frames(96, 128))


@pytest.fixture(scope="module")
def portrait_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("portrait") / "portrait.mp4", grey_frames(128, 96))


@pytest.fixture(scope="module")
def rotated_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Coded 96x128 (H x W) with a 90-degree display rotation: upright it is 128x96."""
    path = tmp_path_factory.mktemp("rotated") / "rotated.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        stream.codec_context.bit_rate = 2_000_000
        stream.set_display_rotation(90)
        for _ in range(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pattern_frame(96, 128), format="rgb24")))
        container.mux(stream.encode())
    return path


def clip_rows() -> dict[str, dict[str, str]]:
    """SOURCES.tsv rows by file name (empty when the clips folder is absent)."""
    if not (CLIPS / "SOURCES.tsv").is_file():
        return {}
    with (CLIPS / "SOURCES.tsv").open(newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


CLIP_ROWS = clip_rows()
VIDEO_CLIPS = sorted(name for name, row in CLIP_ROWS.items() if row["resolution"])
needs_clips = pytest.mark.skipif(not CLIP_ROWS, reason=f"real clips not found at {CLIPS}")


@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_come_back_in_requested_order_with_repeats(grey_video: Path, decoder: str) -> None:
    wanted = [5, 0, 17, 5, 23, 1, 17]
    clip = read_frames(grey_video, lambda n: wanted, decoder=decoder, fallback=False)
    assert frame_indices(clip.frames) == wanted
    assert clip.frames.dtype == torch.uint8 and tuple(clip.frames.shape) == (len(wanted), 96, 128, 3)
    assert (clip.decoder, clip.num_frames, clip.height, clip.width) == (decoder, NUM_FRAMES, 96, 128)


@pytest.mark.parametrize("decoder", DECODERS)
def test_choose_indices_gets_frame_count_and_past_end_clamps(grey_video: Path, decoder: str) -> None:
    seen: list[int] = []
    clip = read_frames(grey_video, lambda n: seen.append(n) or [n + 3, 2], decoder=decoder, fallback=False)
    assert seen == [NUM_FRAMES]
    assert frame_indices(clip.frames) == [NUM_FRAMES - 1, 2]


def test_decord_decodes_each_distinct_index_once_in_one_sorted_batch(
    grey_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[int]] = []

    class RecordingReader(decord.VideoReader):
        def get_batch(self, indices):  # noqa: ANN001, ANN202 - decord's own signature
            calls.append(list(indices))
            return super().get_batch(indices)

    monkeypatch.setattr(decord, "VideoReader", RecordingReader)
    clip = read_frames(grey_video, lambda n: [9, 3, 9, 20, 3], decoder="decord", fallback=False)
    assert calls == [[3, 9, 20]]
    assert frame_indices(clip.frames) == [9, 3, 9, 20, 3]


def over_reporting_reader(extra: int, calls: list[list[int]]) -> type:
    """A decord reader class whose len() counts `extra` frames that then fail to decode."""

    class OverReportingReader(decord.VideoReader):
        def __len__(self) -> int:
            return NUM_FRAMES + extra

        def get_batch(self, indices):  # noqa: ANN001, ANN202 - decord's own signature
            calls.append(list(indices))
            if max(indices) >= NUM_FRAMES:
                raise decord.DECORDError("Error sending packet: end of file")
            return super().get_batch(indices)

    return OverReportingReader


def test_decord_retries_lower_when_the_last_frames_fail(grey_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []
    monkeypatch.setattr(decord, "VideoReader", over_reporting_reader(2, calls))
    clip = read_frames(grey_video, lambda n: [n - 1, 4], decoder="decord", fallback=False)
    assert clip.decoder == "decord" and clip.num_frames == NUM_FRAMES + 2
    assert frame_indices(clip.frames) == [NUM_FRAMES - 1, 4]
    assert [max(call) for call in calls] == [NUM_FRAMES + 1, NUM_FRAMES, NUM_FRAMES - 1]


def test_decord_tail_retries_are_capped(grey_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []
    monkeypatch.setattr(decord, "VideoReader", over_reporting_reader(20, calls))
    with pytest.raises(DecodeError, match="^corrupt or undecodable.*end of file"):
        read_frames(grey_video, lambda n: [n - 1, 4], decoder="decord", fallback=False)
    assert 2 <= len(calls) <= 5
    clip = read_frames(grey_video, lambda n: [n - 1, 4], decoder="decord")  # the fallback reads the real last frame
    assert clip.decoder == "pyav" and frame_indices(clip.frames) == [NUM_FRAMES - 1, 4]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("short_side", [64, 112])
def test_short_side_resizes_and_keeps_aspect(
    grey_video: Path, portrait_video: Path, decoder: str, short_side: int
) -> None:
    long_side = int(128 * short_side / 96 + 0.5)
    landscape = read_frames(grey_video, lambda n: [3, 10], short_side=short_side, decoder=decoder, fallback=False)
    portrait = read_frames(portrait_video, lambda n: [3, 10], short_side=short_side, decoder=decoder, fallback=False)
    assert tuple(landscape.frames.shape) == (2, short_side, long_side, 3)
    assert (landscape.height, landscape.width) == (short_side, long_side)
    assert tuple(portrait.frames.shape) == (2, long_side, short_side, 3)
    assert frame_indices(landscape.frames) == [3, 10] and frame_indices(portrait.frames) == [3, 10]


@pytest.mark.parametrize("short_side", [None, 64])
def test_decord_and_pyav_give_the_same_frames(rotated_video: Path, short_side: int | None) -> None:
    clips = [
        read_frames(rotated_video, lambda n: [0, 3], short_side=short_side, decoder=name, fallback=False)
        for name in DECODERS
    ]
    assert clips[0].frames.shape == clips[1].frames.shape
    assert (clips[0].frames.float() - clips[1].frames.float()).abs().mean() < 3.0


@pytest.mark.parametrize("decoder", DECODERS)
def test_rotated_video_comes_back_upright(rotated_video: Path, decoder: str) -> None:
    clip = read_frames(rotated_video, lambda n: [1], decoder=decoder, fallback=False)
    upright = np.rot90(pattern_frame(96, 128), 1)  # 90 degrees counter-clockwise: [128, 96, 3]
    assert (clip.height, clip.width) == (128, 96)
    assert np.abs(clip.frames[0].numpy().astype(float) - upright).mean() < 4.0
    assert upright_size(rotated_video) == (128, 96)
    resized = read_frames(rotated_video, lambda n: [1], short_side=60, decoder=decoder, fallback=False)
    assert (resized.height, resized.width) == (80, 60)


@needs_clips
@pytest.mark.parametrize("name", VIDEO_CLIPS)
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_real_clip_decodes_with_both_backends(name: str, decoder: str) -> None:
    row = CLIP_ROWS[name]
    width, height = (int(side) for side in row["resolution"].split("x"))
    if "rotation 90" in row["notes"]:  # coded size in the table; frames come back upright
        width, height = height, width
    clip = read_frames(CLIPS / name, lambda n: [0, n // 2, n - 1], decoder=decoder, fallback=False)
    assert clip.num_frames == int(row["frames"].split()[0])
    assert tuple(clip.frames.shape) == (3, height, width, 3)
    assert clip.frames.float().std() > 5.0  # real picture content, not a blank frame


@needs_clips
@pytest.mark.parametrize("name", VIDEO_CLIPS)
def test_real_clips_agree_across_backends(name: str) -> None:
    # not the last frame: decord returns a wrong last frame now and then on the packed-B-frame .avi
    wanted = lambda n: [0, n // 3, (2 * n) // 3, max(n - 2, 0)]  # noqa: E731
    decord_clip, pyav_clip = (
        read_frames(CLIPS / name, wanted, short_side=128, decoder=decoder, fallback=False) for decoder in DECODERS
    )
    assert decord_clip.frames.shape == pyav_clip.frames.shape
    assert (decord_clip.frames.float() - pyav_clip.frames.float()).abs().mean() < 3.0


@needs_clips
@pytest.mark.parametrize("decoder", DECODERS)
def test_index_past_end_of_three_frame_clip_clamps_to_last(decoder: str) -> None:
    path = CLIPS / "rotated90_3frames.mov"
    clip = read_frames(path, lambda n: [7, 2], decoder=decoder, fallback=False)
    assert clip.num_frames == 3
    assert torch.equal(clip.frames[0], clip.frames[1])


@needs_clips
@pytest.mark.parametrize("decoder", DECODERS)
def test_audio_only_file_is_no_video_stream(decoder: str) -> None:
    path = CLIPS / "nasa_audio_only.mp3"
    with pytest.raises(DecodeError, match="^no video stream") as error:
        read_frames(path, lambda n: [0], decoder=decoder)
    assert str(path) in str(error.value) and "decord:" in str(error.value) and "pyav:" in str(error.value)


def test_missing_file_is_file_not_found_without_fallback(tmp_path: Path) -> None:
    path = tmp_path / "absent.mp4"
    with pytest.raises(DecodeError, match="^file not found") as error:
        read_frames(path, lambda n: [0])
    assert str(path) in str(error.value) and "pyav:" not in str(error.value)


@pytest.mark.parametrize("decoder", DECODERS)
def test_corrupt_file_raises_decode_error_naming_both_backends(tmp_path: Path, decoder: str) -> None:
    path = write_corrupt_video(tmp_path / "broken.mp4")
    with pytest.raises(DecodeError, match="^corrupt or undecodable") as error:
        read_frames(path, lambda n: [0], decoder=decoder)
    assert str(path) in str(error.value) and "decord:" in str(error.value) and "pyav:" in str(error.value)


def test_video_stream_without_frames_is_zero_frames(tmp_path: Path) -> None:
    path = tmp_path / "empty.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        container.start_encoding()
    with pytest.raises(DecodeError, match="^zero frames"):
        read_frames(path, lambda n: [0])


def test_fallback_to_pyav_when_decord_fails(grey_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_reader(*args: object, **kwargs: object) -> None:
        raise decord.DECORDError("simulated decord failure")

    monkeypatch.setattr(decord, "VideoReader", broken_reader)
    clip = read_frames(grey_video, lambda n: [6, 2], decoder="decord")
    assert clip.decoder == "pyav" and frame_indices(clip.frames) == [6, 2]
    with pytest.raises(DecodeError, match="simulated decord failure") as error:
        read_frames(grey_video, lambda n: [6, 2], decoder="decord", fallback=False)
    assert "pyav:" not in str(error.value)


def test_sampler_and_argument_errors_are_input_errors_not_fallbacks(grey_video: Path) -> None:
    with pytest.raises(InputError, match="negative index"):
        read_frames(grey_video, lambda n: [-1, 0])
    with pytest.raises(InputError, match="unknown decoder"):
        read_frames(grey_video, lambda n: [0], decoder="ffmpeg")
    with pytest.raises(InputError, match="short_side"):
        read_frames(grey_video, lambda n: [0], short_side=0)

