"""Training and evaluation samples read from a feature cache (the backbone-frozen mode): row by row
(`CachedClips`, in a DataLoader), held in memory (`MemoryClips`) or streamed in slabs (`SlabBatches`).

Training takes one random view of a row's `[V, Tc, D]` and, when Tc > T, T frames by train-mode
segment sampling (temporal augmentation for free); evaluation takes every view and the segment
centres. Choices are seeded from (seed, epoch, video id): independent of workers and processes, and
the same after a resume. `MemoryClips` reads the rows once (one h5py read per slab) into RAM or the
GPU and draws exactly `CachedClips`' samples, batches and global-generator draws, so results are
identical with or without it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bike_cli.data.class_names import labels_by_names
from bike_cli.data.sampling import segment_indices, video_seed
from bike_cli.errors import InputError
from bike_cli.io.feature_cache import FeatureCache

log = logging.getLogger(__name__)

def cache_labels(cache: FeatureCache, names: list[str], names_source: object) -> np.ndarray:
    """The cache's labels numbered by the class names in use (`names`, read from `names_source`): mapped by
    name when the cache records its classes in another order (`labels_by_names`)."""
    return labels_by_names(cache.labels, names, list(cache.meta.class_names), names_source, cache.path)


class CachedClips(Dataset):
    """Rows of a `FeatureCache` -> (frames float16 [T, D] train / [V, T, D] eval, target)."""

    def __init__(self, cache: FeatureCache, frames: int, *, train: bool, seed: int = 0,
                 rows: Sequence[int] | None = None, labels: np.ndarray | None = None) -> None:
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
        target = self.labels[row]  # int64 scalar (class index, -1 unknown) or float [K] multi-hot
        dtype = torch.float32 if self.labels.ndim == 2 else torch.int64
        return torch.from_numpy(np.ascontiguousarray(clip)), torch.as_tensor(target, dtype=dtype)


CACHE_IN_MEMORY = ("auto", "on", "off")
RAM_FRACTION = 0.5  # auto: hold the rows when they take under this share of the available RAM
GPU_FRACTION = 0.5  # ... or of the free GPU memory, when training on CUDA
SLAB_BYTES = 64 * 2**20  # one h5py read covers about this many bytes of consecutive rows


def available_bytes(device: torch.device) -> int:
    """Free memory of `device`: free GPU memory on CUDA, else MemAvailable (free RAM plus page cache)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def wants_memory(mode: str, nbytes: int, device: torch.device) -> bool:
    """Whether to hold `nbytes` of cache rows in memory: `on`, `off`, or `auto` (under the budget)."""
    if mode not in CACHE_IN_MEMORY:
        raise InputError(f"--cache-in-memory {mode!r} is not one of {', '.join(CACHE_IN_MEMORY)}")
    if mode != "auto":
        return mode == "on"
    fraction = GPU_FRACTION if device.type == "cuda" else RAM_FRACTION
    budget = available_bytes(device) * fraction
    log.info("cache rows take %.2f GiB; in-memory budget %.2f GiB", nbytes / 2**30, budget / 2**30)
    return nbytes <= budget


def _row_bytes(cache: FeatureCache) -> int:
    meta = cache.meta
    return meta.num_views * meta.frames * meta.embed_dim * 2  # float16 [V, Tc, D]


def slabs(rows: np.ndarray, slab_rows: int) -> Iterator[tuple[np.ndarray, int, int]]:
    """Group increasing cache rows into slabs: (positions in `rows`, first row, stop row) per slab,
    each slab spanning at most `slab_rows` consecutive cache rows."""
    start = 0
    while start < len(rows):
        stop = int(np.searchsorted(rows, rows[start] + slab_rows, side="left"))
        yield np.arange(start, stop), int(rows[start]), int(rows[stop - 1]) + 1
        start = stop


def read_rows(cache: FeatureCache, rows: Sequence[int], frames: np.ndarray | None = None) -> np.ndarray:
    """float16 [n, V, T, D] of cache `rows` (increasing), frames `frames` of each (None: all), read
    with one contiguous h5py read per slab."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > 1 and np.any(np.diff(rows) <= 0):
        raise InputError("cache rows must be increasing to be read in slabs")
    meta = cache.meta
    if frames is not None and np.array_equal(frames, np.arange(meta.frames)):
        frames = None  # every frame: no selection, no copy
    t = meta.frames if frames is None else len(frames)
    out = np.empty((len(rows), meta.num_views, t, meta.embed_dim), dtype=np.float16)
    for positions, first, stop in slabs(rows, max(1, SLAB_BYTES // _row_bytes(cache))):
        if frames is None and stop - first == len(positions):  # consecutive rows: read straight into `out`
            cache.read_into(out, first, stop, at=int(positions[0]))
            continue
        slab = cache.embeddings(slice(first, stop))  # [stop - first, V, Tc, D]
        slab = slab[rows[positions] - first]
        out[positions] = slab if frames is None else slab[:, :, frames]
    return out


class MemoryClips:
    """The training samples of a train-mode `CachedClips`, its rows held in memory on `device`.

    `length` (optional) cycles the set as `RepeatedDataset` does: item i of epoch e is row i % n
    drawn as epoch e * passes + i // n.
    """

    def __init__(self, source: CachedClips, device: torch.device, length: int | None = None) -> None:
        self.source, self.device = source, device
        rows = read_rows(source.cache, source.rows)  # float16 [n, V, Tc, D]
        self.emb = torch.from_numpy(rows).to(device)  # the same memory on the CPU
        self.host = rows if device.type == "cpu" else None  # numpy gathers fp16 10-50x faster than torch on CPU
        labels = source.labels[source.rows]
        self.targets = torch.as_tensor(labels, dtype=torch.float32 if labels.ndim == 2 else torch.int64)
        self.n = len(source.rows)
        self.length = max(length or 0, self.n)
        self.passes = math.ceil(self.length / self.n) if self.n else 1
        self.epoch = 0

    @staticmethod
    def nbytes(source: CachedClips) -> int:
        """Bytes the rows of `source` take in memory."""
        return len(source.rows) * _row_bytes(source.cache)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def batch(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(float16 [b, T, D] on the device, targets [b] or [b, K] on the CPU) of items `positions`."""
        positions = np.asarray(positions, dtype=np.int64)
        items, passes = positions % self.n, positions // self.n
        _, views, cached_t, _ = self.emb.shape
        index = torch.from_numpy(items)
        if views == 1 and cached_t == self.source.frames:  # nothing to draw: view 0, every frame
            if self.host is not None:
                return torch.from_numpy(self.host[items, 0]), self.targets[index]  # [b, T, D]
            return self.emb[index.to(self.device, non_blocking=True), 0], self.targets[index]
        choices = [self.source.train_choice(int(self.source.rows[i]), self.epoch * self.passes + int(p),
                                            views, cached_t) for i, p in zip(items, passes)]
        view = np.array([c[0] for c in choices], dtype=np.int64)  # [b]
        t_idx = np.stack([c[1] for c in choices])  # [b, T]
        if self.host is not None:
            return torch.from_numpy(self.host[items[:, None], view[:, None], t_idx]), self.targets[index]
        at, view, t_idx = (torch.from_numpy(x).to(self.device, non_blocking=True) for x in (items, view, t_idx))
        return self.emb[at[:, None], view[:, None], t_idx], self.targets[index]  # [b, T, D] on the device

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        clips, targets = self.batch([i])
        return clips[0], targets[0]


class MemoryBatches:
    """The batches of `sampler` (lists of item positions) built by `dataset.batch`, in a DataLoader's place."""

    def __init__(self, dataset: MemoryClips, sampler: Iterable[list[int]]) -> None:
        self.dataset, self.sampler = dataset, sampler

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        torch.empty((), dtype=torch.int64).random_()  # the base-seed draw of a DataLoader iterator
        for positions in self.sampler:
            yield self.dataset.batch(positions)


class SlabBatches:
    """(float16 [b, V, T, D], targets) of a test-mode `CachedClips` in order, `batch_size` rows a batch
    (the batches a DataLoader over it makes), read in contiguous slabs; iterable again and again."""

    def __init__(self, source: CachedClips, batch_size: int) -> None:
        self.source, self.batch_size = source, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.source) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cache, rows, size = self.source.cache, self.source.rows, self.batch_size
        frames = self.source.eval_frames(cache.meta.frames)
        per_slab = max(1, SLAB_BYTES // _row_bytes(cache) // size) * size
        float_labels = self.source.labels.ndim == 2
        for start in range(0, len(rows), per_slab):
            part = rows[start : start + per_slab]
            slab = torch.from_numpy(read_rows(cache, part, frames))  # [s, V, T, D]
            labels = torch.as_tensor(self.source.labels[part], dtype=torch.float32 if float_labels else torch.int64)
            for b in range(0, len(part), size):
                yield slab[b : b + size], labels[b : b + size]
