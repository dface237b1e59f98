"""Tests for bike_cli.data.clip_dataset's ClipAugment and TrainClips: train-time clips from real decoding."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from corrupt_video import write_corrupt_video
from torch.utils.data import DataLoader

from bike_cli.data.class_names import read_class_names
from bike_cli.data.clip_dataset import (
    RATIO,
    ClipAugment,
    MultiViewClips,
    TrainClips,
    collate_items,
    collate_train,
    decode_short_side,
    random_resized_box,
    val_targets,
)
from bike_cli.data.sampling import ViewLayout
from bike_cli.data.synthetic import SampleDataset, make_sample_dataset, write_video
from bike_cli.data.video_lists import VideoEntry, read_video_list
from bike_cli.errors import DecodeError, InputError

GREY_STEP = 12  # frame k of the grey video is uniformly grey level GREY_STEP * k
NUM_FRAMES = 16


def texture(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 frames [T, H, W, 3]."""
    array = np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    return torch.from_numpy(array)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleDataset:
    out = tmp_path_factory.mktemp("sample")
    return make_sample_dataset(out, videos_per_class=2, num_frames=16, size=(64, 96))


@pytest.fixture(scope="module")
def train_items(sample: SampleDataset) -> list[tuple[int, VideoEntry]]:
    videos = read_video_list(sample.train, class_names=read_class_names(sample.classes))
    return list(enumerate(videos))


@pytest.fixture(scope="module")
def grey_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frame k is uniformly grey GREY_STEP * k, so a decoded frame tells its own index."""
    levels = GREY_STEP * np.arange(NUM_FRAMES, dtype=np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (NUM_FRAMES, 48, 64, 3)).copy()
    return write_video(tmp_path_factory.mktemp("grey") / "grey.mp4", frames)


def entry(video_id: str, path: Path, labels: tuple[int, ...] = (0,), line: int = 1) -> VideoEntry:
    return VideoEntry(video_id, path, labels, line)


# ----------------------------------------------------------------------------------- augment


def test_augment_returns_uint8_channels_first_at_size() -> None:
    out = ClipAugment(32)(texture(5, 40, 56), np.random.default_rng(0))
    assert out.dtype == torch.uint8 and out.shape == (5, 3, 32, 32) and out.is_contiguous()


def test_augment_refuses_channels_first_input_and_bad_settings() -> None:
    with pytest.raises(InputError, match=r"\[T, H, W, 3\]"):
        ClipAugment(32)(texture(2, 40, 56).permute(0, 3, 1, 2), np.random.default_rng(0))
    with pytest.raises(InputError, match="scale_min"):
        ClipAugment(32, scale_min=0.0)
    with pytest.raises(InputError, match="flip_prob"):
        ClipAugment(32, flip_prob=1.5)


def test_same_seed_same_clip_other_seed_differs() -> None:
    frames, augment = texture(4, 60, 80), ClipAugment(32)
    first = augment(frames, np.random.default_rng(7))
    assert torch.equal(first, augment(frames, np.random.default_rng(7)))
    assert not torch.equal(first, augment(frames, np.random.default_rng(8)))


def test_every_frame_gets_the_same_crop_flip_and_grayscale() -> None:
    frames = texture(1, 60, 80).expand(6, -1, -1, -1)  # six identical frames
    for seed in range(10):
        out = ClipAugment(24, grayscale_prob=0.5)(frames, np.random.default_rng(seed))
        assert all(torch.equal(out[0], frame) for frame in out[1:])


def test_flip_mirrors_left_and_right() -> None:
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8)  # dark left, bright right
    frames = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    frames[..., 0] = ramp[None, None, :]
    frames[..., 1] = torch.arange(32, dtype=torch.uint8)[None, :, None] * 4  # vertical ramp: must stay
    augment = ClipAugment(32, scale_min=1.0, flip_prob=1.0, grayscale_prob=0.0)
    out = augment(frames, np.random.default_rng(0))  # [T, 3, 32, 32]
    expected = frames.permute(0, 3, 1, 2).flip(-1)
    assert (out.int() - expected.int()).abs().max() <= 1
    assert out[0, 0, 0, 0] > 250 and out[0, 0, 0, -1] < 5


def test_grayscale_makes_channels_equal_luma() -> None:
    frames = torch.zeros(3, 32, 32, 3, dtype=torch.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 200, 100, 50
    out = ClipAugment(16, grayscale_prob=1.0)(frames, np.random.default_rng(0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50  # ITU-R 601-2
    assert (out.float() - luma).abs().max() <= 1


def test_full_scale_crop_of_square_input_is_a_plain_resize() -> None:
    frames = texture(3, 64, 64)
    reference = F.interpolate(
        frames.permute(0, 3, 1, 2).float(), size=(32, 32), mode="bilinear", antialias=True
    )
    augment = ClipAugment(32, scale_min=1.0, flip_prob=0.0, grayscale_prob=0.0)
    for seed in range(10):
        out = augment(frames, np.random.default_rng(seed))
        assert (out.float() - reference).abs().max() <= 1.0


def test_random_resized_box_stays_inside_with_scale_and_aspect_in_range() -> None:
    height, width = 90, 300
    for seed in range(200):
        top, left, h, w = random_resized_box(height, width, np.random.default_rng(seed), scale_min=0.08)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        if (h, w) != (90, 120):  # not the fallback (that frame is too wide for RATIO)
            assert 0.07 <= h * w / (height * width) <= 1.0
            assert RATIO[0] - 0.05 <= w / h <= RATIO[1] + 0.05


def test_random_resized_box_falls_back_to_centre_crop_of_allowed_aspect() -> None:
    # a full-area crop of a 10 x 1000 frame can never have aspect <= 4/3: all tries fail
    top, left, h, w = random_resized_box(10, 1000, np.random.default_rng(0), scale_min=1.0)
    assert (h, w) == (10, round(10 * RATIO[1]))
    assert (top, left) == (0, (1000 - w) // 2)
    top, left, h, w = random_resized_box(1000, 10, np.random.default_rng(0), scale_min=1.0)
    assert (h, w) == (round(10 / RATIO[0]), 10) and (top, left) == ((1000 - h) // 2, 0)


# ----------------------------------------------------------------------------------- TrainClips


def test_item_is_t_augmented_frames_with_its_label(train_items: list[tuple[int, VideoEntry]]) -> None:
    data = TrainClips(train_items, frames=4, size=32, augment=ClipAugment(32), num_classes=4)
    assert data.short_side == decode_short_side(32) > 32
    for i, (_, video) in enumerate(train_items):
        frames, label = data[i]
        assert frames.dtype == torch.uint8 and frames.shape == (4, 3, 32, 32)
        assert label == video.labels[0]


def test_train_sampling_reaches_the_decoder_one_frame_per_segment(grey_video: Path) -> None:
    data = TrainClips([(0, entry("grey", grey_video))], frames=4, size=32, augment=None, num_classes=1)
    seen = set()
    for epoch in range(4):
        data.set_epoch(epoch)
        frames, _ = data[0]  # centre crop, no augmentation: [4, 3, 32, 32]
        indices = data.frame_indices("grey", NUM_FRAMES)
        assert frames.shape == (4, 3, 32, 32)
        assert [t * 4 <= k < (t + 1) * 4 for t, k in enumerate(indices)] == [True] * 4
        decoded = (frames.float().mean(dim=(1, 2, 3)) / GREY_STEP).round().long()
        assert decoded.tolist() == indices.tolist()
        seen.add(tuple(indices.tolist()))
    assert len(seen) > 1  # epochs sample different frames


def test_items_depend_on_seed_and_epoch_not_on_order(train_items: list[tuple[int, VideoEntry]]) -> None:
    def make(seed: int = 0, epoch: int = 0) -> TrainClips:
        data = TrainClips(train_items, frames=4, size=32, augment=ClipAugment(32), num_classes=4, seed=seed)
        data.set_epoch(epoch)
        return data

    forward = [make()[i][0] for i in range(len(train_items))]
    backward = [make()[i][0] for i in reversed(range(len(train_items)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert not torch.equal(forward[0], make(epoch=1)[0][0])
    assert not torch.equal(forward[0], make(seed=1)[0][0])


def test_worker_count_does_not_change_batches(train_items: list[tuple[int, VideoEntry]]) -> None:
    data = TrainClips(train_items, frames=2, size=24, augment=ClipAugment(24), num_classes=4)
    data.set_epoch(3)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(data, batch_size=2, num_workers=workers, collate_fn=collate_train)
        batches.append(list(loader))
    for (frames_a, labels_a), (frames_b, labels_b) in zip(*batches):
        assert torch.equal(frames_a, frames_b) and torch.equal(labels_a, labels_b)


def test_corrupt_video_is_replaced_with_a_warning(
    train_items: list[tuple[int, VideoEntry]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = entry("bad_video", write_corrupt_video(tmp_path / "bad.mp4"), labels=(3,), line=9)
    items = [(0, bad)] + train_items[:2]
    data = TrainClips(items, frames=4, size=32, augment=ClipAugment(32), num_classes=4)
    with caplog.at_level(logging.WARNING, logger="bike_cli.data.clip_dataset"):
        frames, label = data[0]
    assert frames.shape == (4, 3, 32, 32)
    assert label in {video.labels[0] for _, video in train_items[:2]}  # the substitute's label
    assert any("bad_video" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    again, _ = data[0]
    assert torch.equal(frames, again)  # the substitute is deterministic


def test_decode_error_after_capped_retries(tmp_path: Path) -> None:
    items = [(i, entry(f"bad{i}", write_corrupt_video(tmp_path / f"bad{i}.mp4"))) for i in range(3)]
    data = TrainClips(items, frames=2, size=16, augment=None, num_classes=1, max_retries=2)
    with pytest.raises(DecodeError, match="3 videos in a row") as info:
        data[0]
    assert "bad0.mp4" in str(info.value) and "corrupt" in str(info.value)


def test_multilabel_targets_are_multi_hot(grey_video: Path) -> None:
    labels = [(0, 2), (1,), ()]
    items = [(i, entry(name, grey_video, labels[i], i + 1)) for i, name in enumerate("abc")]
    data = TrainClips(items, frames=2, size=16, augment=ClipAugment(16), num_classes=4, multilabel=True)
    frames, labels = collate_train([data[i] for i in range(3)])
    assert frames.shape == (3, 2, 3, 16, 16) and frames.dtype == torch.uint8
    assert labels.dtype == torch.float32
    assert labels.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_single_label_collate_gives_long_labels_with_unknown(grey_video: Path) -> None:
    items = [(0, entry("a", grey_video, (3,))), (1, entry("b", grey_video, ()))]
    data = TrainClips(items, frames=2, size=16, augment=None, num_classes=4)
    _, labels = collate_train([data[0], data[1]])
    assert labels.dtype == torch.long and labels.tolist() == [3, -1]


def test_labels_are_checked_against_the_run(grey_video: Path) -> None:
    with pytest.raises(InputError, match="line 5.*single-label"):
        TrainClips([(0, entry("a", grey_video, (0, 1), 5))], frames=2, size=16, augment=None, num_classes=4)
    with pytest.raises(InputError, match="outside 0..3"):
        TrainClips([(0, entry("a", grey_video, (4,)))], frames=2, size=16, augment=None, num_classes=4)
    with pytest.raises(InputError, match="augmentation size"):
        TrainClips([(0, entry("a", grey_video))], frames=2, size=16, augment=ClipAugment(32), num_classes=4)


def test_val_targets_of_multi_view_clips(sample: SampleDataset) -> None:
    videos = read_video_list(sample.val, class_names=read_class_names(sample.classes))
    clips = MultiViewClips(list(enumerate(videos)), frames=2, layout=ViewLayout(1, 1), size=32)
    batch = collate_items([clips[i] for i in range(len(clips))])
    assert batch.frames is not None and batch.frames.shape == (len(videos), 1, 2, 3, 32, 32)
    targets = val_targets(batch.ok, num_classes=sample.num_classes, multilabel=False)
    assert targets.dtype == torch.long and targets.tolist() == [video.labels[0] for video in videos]
