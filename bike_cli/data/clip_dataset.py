"""The torch Datasets over videos, decoding in DataLoader workers: multi-view test clips (`MultiViewClips`)
and augmented training clips (`TrainClips`, end-to-end `train-video`).

One batched decoder call per item, resized while decoding (a single-crop layout in the model's own
resize mode: `bike_cli.data.sampling`); frames stay uint8 until the model (4x fewer bytes between
processes). Training decodes at short side `round(size * 256 / 224)`, as the authors scale before
cropping, then one `ClipAugment` per clip. Randomness is seeded with (run seed, epoch, video id) only,
so an item is the same whatever the workers (re-created each epoch to see `set_epoch`). A video that
fails to decode is logged and replaced by another drawn like the item; after `max_retries`
substitutes also fail, DecodeError lists every reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from bike_cli.config.profile import DEFAULT_PROFILE, Profile
from bike_cli.config.stages import DEFAULT_DECODER
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import (
    TEST_TRANSFORMS,
    TRAIN_INDICES,
    ViewLayout,
    clip_indices,
    spatial_crops,
    video_seed,
    view_resize_mode,
)
from bike_cli.data.video_lists import VideoEntry
from bike_cli.errors import BikeError, DecodeError, InputError

logger = logging.getLogger(__name__)

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

    def _indices(self, entry: VideoEntry, num_frames: int) -> np.ndarray:  # [C, T] -> flat [C*T]
        return clip_indices(self.profile, self.mode, num_frames, self.frames, self.layout.clips, self.seed,
                            entry.video_id).ravel()

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


RATIO = (3 / 4, 4 / 3)  # aspect ratio (w / h) range of the random resized crop
CROP_TRIES = 10


def random_resized_box(
    height: int, width: int, rng: np.random.Generator, scale_min: float = 0.08
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop: area fraction in [scale_min, 1], aspect in RATIO.

    Up to CROP_TRIES draws; when none fits inside the frame, the centre crop of the whole frame
    with its aspect clamped to RATIO."""
    area = height * width
    log_low, log_high = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(CROP_TRIES):
        target = area * rng.uniform(scale_min, 1.0)
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    aspect = width / height
    if aspect < RATIO[0]:  # too tall: full width
        w, h = width, int(round(width / RATIO[0]))
    elif aspect > RATIO[1]:  # too wide: full height
        w, h = int(round(height * RATIO[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass
class ClipAugment:
    """Random resized crop to `size` x `size`, horizontal flip and grayscale (ITU-R 601-2 luma, 3 channels),
    the same for every frame. Flips swap left and right: turn them off (flip_prob=0) where labels name a
    direction (Something-Something's "pushing something from left to right")."""

    size: int
    scale_min: float = 0.08
    flip_prob: float = 0.5
    grayscale_prob: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.scale_min <= 1.0:
            raise InputError(f"crop scale_min must be in (0, 1], got {self.scale_min}")
        for name in ("flip_prob", "grayscale_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """uint8 frames [T, H, W, 3] (as `read_frames` returns them) -> uint8 [T, 3, size, size].

        Draws, in this order: the crop box, the flip, the grayscale (the last two always drawn)."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        _, height, width, _ = frames.shape
        top, left, h, w = random_resized_box(height, width, rng, self.scale_min)
        flip = rng.random() < self.flip_prob
        gray = rng.random() < self.grayscale_prob
        chw = frames.permute(0, 3, 1, 2)  # [T, 3, H, W], a channels-last view (no copy)
        # one call on uint8: torchvision's native uint8 antialias path, ~8x faster than through float
        out = TF.resized_crop(chw, top, left, h, w, [self.size, self.size], antialias=True)  # [T, 3, s, s]
        if flip:
            out = out.flip(-1)
        if gray:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        return out.contiguous()


Target = int | torch.Tensor  # class index (-1: unknown) or multi-hot float [K]

_SAMPLING, _AUGMENT, _SUBSTITUTE = 0, 1, 2  # independent random streams of one (video, epoch)


def decode_short_side(size: int) -> int:
    """Short side to decode at before a random resized crop to `size` (256 for 224)."""
    return round(size * 256 / 224)


def label_target(entry: VideoEntry, num_classes: int, multilabel: bool) -> Target:
    """The entry's class index (-1 when unknown), or its multi-hot float [K] when `multilabel`."""
    if multilabel:
        target = torch.zeros(num_classes)
        target[list(entry.labels)] = 1.0
        return target
    return entry.labels[0] if entry.labels else -1


class TrainClips(Dataset):
    """`(list position, entry)` pairs -> `(frames uint8 [T, 3, size, size], target)` for training."""

    def __init__(
        self,
        items: Sequence[tuple[int, VideoEntry]],
        *,
        frames: int,
        size: int,
        augment: ClipAugment | None,
        num_classes: int,
        multilabel: bool = False,
        seed: int = 0,
        decoder: str = DEFAULT_DECODER,
        max_retries: int = 5,
        profile: Profile = DEFAULT_PROFILE,
    ) -> None:
        if augment is not None and augment.size != size:
            raise InputError(f"augmentation size {augment.size} differs from the clip size {size}")
        for _, entry in items:  # every label in [0, num_classes), one per video unless multilabel
            where = f"video {entry.video_id!r} (list line {entry.line})"
            if any(not 0 <= label < num_classes for label in entry.labels):
                raise InputError(f"{where}: labels {list(entry.labels)} outside 0..{num_classes - 1}")
            if not multilabel and len(entry.labels) > 1:
                raise InputError(f"{where} has {len(entry.labels)} labels but the list is single-label")
        self.items = list(items)
        self.frames, self.size, self.augment = frames, size, augment
        self.num_classes, self.multilabel = num_classes, multilabel
        self.seed, self.decoder, self.max_retries = seed, decoder, max_retries
        self.short_side = decode_short_side(size) if augment is not None else size
        self.epoch = 0
        self.profile = profile  # its training frame indices (bike_cli.config.profile)

    def set_epoch(self, epoch: int) -> None:
        """Draw the frames, crops and substitutes of `epoch` >= 0 (call before iterating the loader)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _rng(self, video_id: str, stream: int, *extra: int) -> np.random.Generator:
        return np.random.default_rng([video_seed(self.seed, video_id), self.epoch, stream, *extra])

    def frame_indices(self, video_id: str, num_frames: int) -> np.ndarray:
        """The T frame indices [T] this epoch samples from a video of `num_frames` frames."""
        rng = self._rng(video_id, _SAMPLING)
        return TRAIN_INDICES[self.profile.train_indices](num_frames, self.frames, 1, rng)[0]

    def _clip(self, entry: VideoEntry) -> torch.Tensor:
        """Decode and augment one video: uint8 [T, 3, size, size]; DecodeError when it cannot."""
        clip = read_frames(entry.path, lambda n: self.frame_indices(entry.video_id, n), short_side=self.short_side,
                           decoder=self.decoder)  # frames [T, H, W, 3]
        if self.augment is None:
            return spatial_crops(clip.frames, self.size, 1)[0]  # centre crop [T, 3, s, s]
        return self.augment(clip.frames, self._rng(entry.video_id, _AUGMENT))

    def _substitute(self, i: int, attempt: int) -> int:
        """Position of the video that stands in for item i after `attempt + 1` failures."""
        rng = self._rng(self.items[i][1].video_id, _SUBSTITUTE, attempt)
        return (i + 1 + int(rng.integers(len(self.items) - 1))) % len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        reasons: list[str] = []
        position = i
        while True:
            entry = self.items[position][1]
            try:
                frames = self._clip(entry)
            except DecodeError as err:
                reasons.append(str(err))
                if len(reasons) > self.max_retries or len(self.items) < 2:
                    break
                position = self._substitute(i, len(reasons) - 1)
                logger.warning(
                    "training: skipping video %r (list line %d): %s; using %r instead",
                    entry.video_id, entry.line, err, self.items[position][1].video_id,
                )
                continue
            return frames, label_target(entry, self.num_classes, self.multilabel)
        raise DecodeError(
            f"{len(reasons)} videos in a row could not be decoded for training item {i} "
            f"({self.items[i][1].video_id!r}): " + "; ".join(reasons)
        )


def _stack_targets(targets: Sequence[Target]) -> torch.Tensor:
    """LongTensor [B] of class indices, or FloatTensor [B, K] of multi-hot rows."""
    if targets and isinstance(targets[0], torch.Tensor):
        return torch.stack(list(targets))
    return torch.tensor(list(targets), dtype=torch.long)


def collate_train(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack items: (frames uint8 [B, T, 3, S, S], labels LongTensor [B] or FloatTensor [B, K])."""
    frames = torch.stack([clip for clip, _ in batch])  # [B, T, 3, S, S]
    return frames, _stack_targets([target for _, target in batch])


def val_targets(items: Sequence[ClipItem], num_classes: int, multilabel: bool) -> torch.Tensor:
    """Targets of validation items (a `ClipBatch.ok`), like `collate_train`'s: [B] or [B, K]."""
    return _stack_targets([label_target(item.entry, num_classes, multilabel) for item in items])
