"""Training and evaluation samples read from a feature cache (the backbone-frozen mode).

A cache row holds `[V, Tc, D]` frame embeddings. Training takes one random view and, when the cache
holds more frames than the model uses (Tc > T), T of them by train-mode segment sampling: temporal
augmentation for free. Evaluation takes every view and the segment centres.
The random choices are seeded from (seed, epoch, video id), so they do not depend on the number of
workers or processes, and a resumed run sees the same samples as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bike_cli.data.class_names import labels_by_names
from bike_cli.data.sampling import segment_indices, video_seed
from bike_cli.errors import InputError
from bike_cli.io.feature_cache import FeatureCache


def cache_labels(cache: FeatureCache, names: list[str], names_source: object) -> np.ndarray:
    """The cache's labels numbered by the class names in use (`names`, read from `names_source`): mapped by
    name when the cache records its classes in another order (`labels_by_names`)."""
    return labels_by_names(cache.labels, names, list(cache.meta.class_names), names_source, cache.path)


class CachedClips(Dataset):
    """Rows of a `FeatureCache` -> (frames float16 [T, D] train / [V, T, D] eval, target)."""

    def __init__(
        self,
        cache: FeatureCache,
        frames: int,
        *,
        train: bool,
        seed: int = 0,
        rows: Sequence[int] | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        if frames > cache.meta.frames:
            raise InputError(
                f"{cache.path} holds {cache.meta.frames} frames per clip; {frames} were asked for "
                f"(extract the cache with --frames {frames} or more)"
            )
        self.cache, self.frames, self.train, self.seed = cache, frames, train, seed
        self.rows = np.arange(len(cache)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.labels = cache.labels if labels is None else labels  # [N] or [N, K], every row: see `cache_labels`
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def target(self, i: int) -> torch.Tensor:
        """int64 scalar (class index, -1 unknown) or float [K] multi-hot."""
        label = self.labels[self.rows[i]]
        return torch.as_tensor(label, dtype=torch.float32 if self.labels.ndim == 2 else torch.int64)

    def train_choice(self, row: int, epoch: int, views: int, cached_t: int) -> tuple[int, np.ndarray]:
        """The view and the frame indices int64 [T] that training takes from cache row `row` in `epoch`."""
        rng = np.random.default_rng(video_seed(self.seed * 100_003 + epoch, self.cache.video_ids[row]))
        view = int(rng.integers(views))
        t_idx = np.arange(cached_t) if cached_t == self.frames else segment_indices(
            cached_t, self.frames, mode="train", rng=rng
        )[0]
        return view, t_idx

    def eval_frames(self, cached_t: int) -> np.ndarray:
        """The frame indices int64 [T] that evaluation takes from every row: the segment centres."""
        return segment_indices(cached_t, self.frames, mode="test")[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[i])
        emb = self.cache.embeddings(row)  # float16 [V, Tc, D]
        if self.train:
            view, t_idx = self.train_choice(row, self.epoch, emb.shape[0], emb.shape[1])
            clip = emb[view, t_idx]  # [T, D]
        else:
            clip = emb[:, self.eval_frames(emb.shape[1])]  # [V, T, D]
        return torch.from_numpy(np.ascontiguousarray(clip)), self.target(i)
