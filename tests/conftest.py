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
