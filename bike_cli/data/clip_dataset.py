"""A torch Dataset that turns list entries into multi-view uint8 clips, decoding in DataLoader workers.

Each item is decoded with one batched decoder call (all views' frames at once), resized during
decoding so that the short side equals the model's input size, and cropped into the view layout
(a single-crop layout uses the model's own resize mode instead: see `bike_cli.data.sampling`).
Frames stay uint8 until they reach the model: converting and normalising there (on the GPU where
there is one) moves 4x fewer bytes between processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from bike_cli.config.profile import DEFAULT_PROFILE, Profile
from bike_cli.config.stages import DEFAULT_DECODER
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import (
    TEST_INDICES,
    TEST_TRANSFORMS,
    TRAIN_INDICES,
    ViewLayout,
    video_seed,
    view_resize_mode,
)
from bike_cli.data.video_lists import VideoEntry
from bike_cli.errors import BikeError


@dataclass
class ClipItem:
    """One decoded video, or the reason it could not be decoded."""

    list_index: int
    entry: VideoEntry
    frames: torch.Tensor | None  # uint8 [V, T, 3, S, S]; None when decoding failed
    num_frames: int = 0
    decoder: str = ""
    error: str | None = None


class MultiViewClips(Dataset):
    """`(list position, entry)` pairs -> `ClipItem` with `layout.num_views` views of `frames` frames."""

    def __init__(
        self,
        items: Sequence[tuple[int, VideoEntry]],
        *,
        frames: int,
        layout: ViewLayout,
        size: int,
        mode: str = "test",
        seed: int = 0,
        decoder: str = DEFAULT_DECODER,
        profile: Profile = DEFAULT_PROFILE,
        resize_mode: str = "shortest",
    ) -> None:
        self.items = list(items)
        self.frames, self.layout, self.size = frames, layout, size
        self.mode, self.seed, self.decoder = mode, seed, decoder
        self.profile = profile  # its frame indices and test transform (bike_cli.config.profile)
        self.resize = view_resize_mode(resize_mode, layout.crops)  # the model's mode for a single crop

    def __len__(self) -> int:
        return len(self.items)

    def _indices(self, entry: VideoEntry, num_frames: int) -> np.ndarray:
        rng = np.random.default_rng(video_seed(self.seed, entry.video_id)) if self.mode == "train" else None
        profile = self.profile
        if rng is not None:  # [C, T] -> flat [C*T]
            return TRAIN_INDICES[profile.train_indices](num_frames, self.frames, self.layout.clips, rng).ravel()
        return TEST_INDICES[profile.test_indices](num_frames, self.frames, self.layout.clips).ravel()

    def __getitem__(self, i: int) -> ClipItem:
        list_index, entry = self.items[i]
        try:
            transform = TEST_TRANSFORMS[self.profile.test_transform]
            clip = read_frames(entry.path, lambda n: self._indices(entry, n),
                               short_side=None if transform.full_size else self.size, decoder=self.decoder,
                               resize=self.resize)
            crops = transform.views(clip.frames, self.size, self.layout.crops, self.resize)  # [S, C*T, 3, s, s]
        except BikeError as err:
            return ClipItem(list_index, entry, None, error=str(err))
        except OSError as err:  # read errors after opening (an I/O error, a file removed meanwhile)
            return ClipItem(list_index, entry, None, error=f"not a readable file: {entry.path} ({err})")
        s, c, t = self.layout.crops, self.layout.clips, self.frames
        views = crops.view(s, c, t, 3, self.size, self.size).transpose(0, 1)  # [C, S, T, 3, s, s]
        views = views.reshape(c * s, t, 3, self.size, self.size)  # [V, T, 3, s, s], v = c*S + s
        return ClipItem(list_index, entry, views, clip.num_frames, clip.decoder)


@dataclass
class ClipBatch:
    """Decoded videos stacked for the model, plus the videos that failed."""

    ok: list[ClipItem]  # items with frames (their `frames` field is cleared after stacking)
    frames: torch.Tensor | None  # uint8 [B, V, T, 3, S, S] for `ok`, None when all failed
    failed: list[ClipItem]


def collate_items(items: list[ClipItem]) -> ClipBatch:
    """Stack the decoded clips in the worker, so the main process receives one tensor."""
    ok = [item for item in items if item.frames is not None]
    frames = torch.stack([item.frames for item in ok]) if ok else None
    for item in ok:
        item.frames = None
    return ClipBatch(ok, frames, [item for item in items if item.frames is None and item.error])


def merge_batches(batches: list[ClipBatch]) -> ClipBatch:
    """One ClipBatch of several (the main process groups single-video loader items for the model)."""
    ok = [item for b in batches for item in b.ok]
    frames = [b.frames for b in batches if b.frames is not None]
    return ClipBatch(ok, torch.cat(frames) if frames else None, [item for b in batches for item in b.failed])
