"""The frame-index rules by name: `Profile.test_indices` and `Profile.train_indices` (bike_cli.config.profile).

Every rule returns int64 [clips, frames] indices into a video of `num_frames` frames; a training
rule draws from `rng` clip after clip.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bike_cli.config.profile import ROUNDED_SEGMENTS, SEGMENT_CENTRES, SEGMENT_UNIFORM, TICK_STARTS
from bike_cli.data.authors import authors_test_indices, authors_train_indices
from bike_cli.data.sampling import segment_indices

TEST_INDICES: dict[str, Callable[[int, int, int], np.ndarray]] = {
    SEGMENT_CENTRES: lambda num_frames, frames, clips: segment_indices(num_frames, frames, mode="test", clips=clips),
    TICK_STARTS: authors_test_indices,
}

TRAIN_INDICES: dict[str, Callable[[int, int, int, np.random.Generator], np.ndarray]] = {
    SEGMENT_UNIFORM: lambda num_frames, frames, clips, rng: segment_indices(
        num_frames, frames, mode="train", clips=clips, rng=rng),
    ROUNDED_SEGMENTS: lambda num_frames, frames, clips, rng: np.stack(
        [authors_train_indices(num_frames, frames, rng) for _ in range(clips)]),
}
