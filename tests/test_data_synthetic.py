"""Tests for bike_cli.data.synthetic: the sample dataset's files, determinism, decodability and content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bike_cli.data.decoding.read import DECODERS, read_frames
from bike_cli.data.synthetic import (
    SAMPLE_CLASSES,
    SampleDataset,
    make_sample_dataset,
    render_sample,
    write_video,
)
from bike_cli.errors import InputError


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory: pytest.TempPathFactory) -> SampleDataset:
    """The default dataset (4 classes x 6 videos of 32 frames at 96x128)."""
    return make_sample_dataset(tmp_path_factory.mktemp("sample") / "data")


def decoded(path: Path) -> torch.Tensor:
    """All frames [T, H, W, 3] of a video."""
    return read_frames(path, lambda n: list(range(n))).frames


def shape_centroids(frames: torch.Tensor) -> np.ndarray:
    """(y, x) centroid [T-1, 2] of the pixels that change between consecutive frames [T, H, W, 3]:
    the leading and trailing edges of the moving shape, centred on it."""
    change = (frames[1:].float() - frames[:-1].float()).abs().sum(dim=-1) > 60  # [T-1, H, W]
    ys, xs = torch.meshgrid(torch.arange(frames.shape[1]), torch.arange(frames.shape[2]), indexing="ij")
    counts = change.sum(dim=(1, 2)).clamp(min=1)
    return torch.stack([(change * ys).sum(dim=(1, 2)) / counts, (change * xs).sum(dim=(1, 2)) / counts], 1).numpy()


def test_dataset_lists_and_classes_are_written_and_readable(default_dataset: SampleDataset) -> None:
    dataset = default_dataset
    classes = pd.read_csv(dataset.classes)
    assert list(classes.columns) == ["id", "name"]
    assert classes["id"].tolist() == list(range(len(SAMPLE_CLASSES)))
    assert tuple(classes["name"]) == SAMPLE_CLASSES and dataset.num_classes == len(SAMPLE_CLASSES)
    train, val = pd.read_csv(dataset.train), pd.read_csv(dataset.val)
    assert list(train.columns) == ["path", "label"] == list(val.columns)
    assert (len(train), len(val)) == (dataset.num_train, dataset.num_val) == (16, 8)
    assert set(train["path"]).isdisjoint(val["path"])
    for split in (train, val):
        assert split["label"].value_counts().to_dict() == {name: len(split) // 4 for name in SAMPLE_CLASSES}
        for relative, label in split.itertuples(index=False):
            assert (dataset.root / relative).is_file()
            assert Path(relative).parent == Path("videos")
            assert Path(relative).name.startswith(label.replace(" ", "_") + "_")


@pytest.mark.parametrize("decoder", DECODERS)
def test_videos_decode_to_requested_size_and_frame_count(tmp_path: Path, decoder: str) -> None:
    dataset = make_sample_dataset(tmp_path, videos_per_class=1, val_fraction=0.0, num_frames=12, size=(80, 112))
    assert (dataset.num_train, dataset.num_val) == (4, 0)
    for relative in pd.read_csv(dataset.train)["path"]:
        clip = read_frames(dataset.root / relative, lambda n: list(range(n)), decoder=decoder, fallback=False)
        assert clip.num_frames == 12 and tuple(clip.frames.shape) == (12, 80, 112, 3)
    assert len(pd.read_csv(dataset.val)) == 0


def test_dataset_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    kwargs = {"videos_per_class": 2, "val_fraction": 0.5, "num_frames": 8}
    first = make_sample_dataset(tmp_path / "a", seed=3, **kwargs)
    again = make_sample_dataset(tmp_path / "b", seed=3, **kwargs)
    other = make_sample_dataset(tmp_path / "c", seed=4, **kwargs)
    for name in ("classes.csv", "train.csv", "val.csv"):
        assert (first.root / name).read_text() == (again.root / name).read_text() == (other.root / name).read_text()
    paths = pd.read_csv(first.train)["path"].tolist() + pd.read_csv(first.val)["path"].tolist()
    for relative in paths:
        assert torch.equal(decoded(first.root / relative), decoded(again.root / relative))
    assert any(not torch.equal(decoded(first.root / p), decoded(other.root / p)) for p in paths)


def test_render_sample_is_deterministic_and_varies_with_the_generator() -> None:
    one = render_sample(0, np.random.default_rng(7), num_frames=8, size=(48, 64))
    assert one.dtype == np.uint8 and one.shape == (8, 48, 64, 3)
    assert np.array_equal(one, render_sample(0, np.random.default_rng(7), num_frames=8, size=(48, 64)))
    assert not np.array_equal(one, render_sample(0, np.random.default_rng(8), num_frames=8, size=(48, 64)))


def test_motion_direction_classes_move_opposite_ways(default_dataset: SampleDataset) -> None:
    dataset = default_dataset
    videos = pd.concat([pd.read_csv(dataset.train), pd.read_csv(dataset.val)])
    expected = {  # axis of the centroid (0: y, 1: x) and the sign of its motion
        "square moving right": (1, 1),
        "square moving left": (1, -1),
        "circle moving down": (0, 1),
        "circle moving up": (0, -1),
    }
    assert set(expected) == set(SAMPLE_CLASSES)
    for relative, label in videos.itertuples(index=False):
        centroids = shape_centroids(decoded(dataset.root / relative))  # [T-1, 2]
        axis, sign = expected[label]
        drift = np.polyfit(np.arange(len(centroids)), centroids, 1)[0]  # pixels per frame, (y, x)
        assert sign * drift[axis] > 0.5, (relative, drift)
        assert abs(drift[1 - axis]) < 0.25, (relative, drift)


def test_square_and_circle_classes_differ_in_colour(default_dataset: SampleDataset) -> None:
    dataset = default_dataset
    videos = pd.read_csv(dataset.train)
    for relative, label in videos.itertuples(index=False):
        frames = decoded(dataset.root / relative).float()  # [T, H, W, 3]
        moving = ((frames[1:] - frames[:-1]).abs().sum(dim=-1) > 60).unsqueeze(-1)  # [T-1, H, W, 1]
        red, _, blue = ((frames[1:] * moving).sum(dim=(0, 1, 2)) / moving.sum()).tolist()
        assert (red > blue + 20) if label.startswith("square") else (blue > red + 20), (relative, red, blue)


def test_write_video_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 33, 64, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        write_video(tmp_path / "float.mp4", np.zeros((2, 32, 64, 3), np.float32))
    written = write_video(tmp_path / "ok.mp4", torch.zeros(3, 32, 64, 3, dtype=torch.uint8), fps=10)
    assert read_frames(written, lambda n: [0]).num_frames == 3
