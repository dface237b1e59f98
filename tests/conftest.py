"""Shared fixtures: the real clips in ../shared (skipped cleanly where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"


@pytest.fixture
def shared_clips() -> Path:
    """The folder of real clips beside the repository; skips the test where it is absent."""
    if not SHARED_CLIPS.is_dir():
        pytest.skip(f"real clips not found at {SHARED_CLIPS}")
    return SHARED_CLIPS


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
    """A small generated, labelled video dataset (4 classes x 3 videos, 16 frames)."""
    from bike_cli.data.synthetic import make_sample_dataset

    return make_sample_dataset(tmp_path_factory.mktemp("sample"), videos_per_class=3, num_frames=16, seed=0)


@pytest.fixture(scope="session")
def motion_caches(tmp_path_factory):
    """Train/val feature caches (bike-tiny, 8 frames) of a generated 4-class dataset (12 videos a class)."""
    from bike_cli.config.stages import ExtractConfig
    from bike_cli.data.synthetic import make_sample_dataset
    from bike_cli.stages.extract import run_extraction

    root = tmp_path_factory.mktemp("motion")
    data = make_sample_dataset(root / "data", videos_per_class=12, num_frames=16, seed=5)
    for split in ("train", "val"):
        run_extraction(ExtractConfig(list_path=getattr(data, split), classes=data.classes,
                                     out=root / f"{split}.h5", frames=8, workers=0))
    return data, root / "train.h5", root / "val.h5"


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory, sample_data):
    """A 4-frame bike-tiny feature cache of the sample videos' train split (8 videos, 4 classes)."""
    from bike_cli.config.stages import ExtractConfig
    from bike_cli.stages.extract import run_extraction

    out = tmp_path_factory.mktemp("tiny_cache") / "train_4f.h5"
    run_extraction(ExtractConfig(list_path=sample_data.train, classes=sample_data.classes, out=out, frames=4,
                                 workers=0, model="bike-tiny", pretrained="none"))
    return out


@pytest.fixture(scope="session")
def slow_videos(tmp_path_factory):
    """Videos slow enough to decode (larger, longer) that a test can stop a run in the middle."""
    from bike_cli.data.synthetic import make_sample_dataset

    return make_sample_dataset(tmp_path_factory.mktemp("slow"), videos_per_class=4, num_frames=32,
                               size=(96, 128), val_fraction=0.0, seed=4)
