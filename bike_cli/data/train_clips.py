"""The training dataset of end-to-end (`train-video` from videos) runs: one augmented clip per video.

Each item decodes `frames` frames with train-mode TSN sampling (one random frame per segment) in one
decoder call, then augments the clip (`ClipAugment`). Randomness comes from generators seeded with
(run seed, epoch, video id) only, so an item is the same whatever the worker count, the order of
work or the process; `set_epoch` changes it every epoch. The DataLoader must re-create its workers
each epoch (`persistent_workers=False`, the default) for them to see the new epoch.

Frames are decoded with the short side `round(size * 256 / 224)` (256 for 224 px, as the authors'
pipeline scales before cropping), so the random resized crop has some room around the centre square.
Without augmentation (`augment=None`) frames are decoded at short side `size` and centre-cropped.

A video that fails to decode is logged (warning, with its id and the reason) and replaced by another
video of the list drawn from a generator seeded like the item, so one bad file among 240k does not
stop training; after `max_retries` substitutes also fail, DecodeError lists every reason.

Validation end to end uses `MultiViewClips` (test mode) and `collate_items` from `clip_dataset`;
`val_targets` turns a `ClipBatch`'s decoded items into the same targets as `collate_train`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bike_cli.config.profile import DEFAULT_PROFILE, Profile
from bike_cli.config.stages import DEFAULT_DECODER
from bike_cli.data.augment import ClipAugment
from bike_cli.data.clip_dataset import ClipItem
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import TRAIN_INDICES, spatial_crops, video_seed
from bike_cli.data.video_lists import VideoEntry
from bike_cli.errors import DecodeError, InputError

logger = logging.getLogger(__name__)

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


def _check_labels(items: Sequence[tuple[int, VideoEntry]], num_classes: int, multilabel: bool) -> None:
    """InputError for a label outside [0, num_classes) or several labels in a single-label run."""
    for _, entry in items:
        where = f"video {entry.video_id!r} (list line {entry.line})"
        if any(not 0 <= label < num_classes for label in entry.labels):
            raise InputError(f"{where}: labels {list(entry.labels)} outside 0..{num_classes - 1}")
        if not multilabel and len(entry.labels) > 1:
            raise InputError(f"{where} has {len(entry.labels)} labels but the list is single-label")


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
        if frames < 1 or size < 1 or num_classes < 1 or max_retries < 0:
            raise InputError(
                f"need frames, size, num_classes >= 1 and max_retries >= 0, got "
                f"{frames}, {size}, {num_classes}, {max_retries}"
            )
        if augment is not None and augment.size != size:
            raise InputError(f"augmentation size {augment.size} differs from the clip size {size}")
        _check_labels(items, num_classes, multilabel)
        self.items = list(items)
        self.frames, self.size, self.augment = frames, size, augment
        self.num_classes, self.multilabel = num_classes, multilabel
        self.seed, self.decoder, self.max_retries = seed, decoder, max_retries
        self.short_side = decode_short_side(size) if augment is not None else size
        self.epoch = 0
        self.profile = profile  # its training frame indices (bike_cli.config.profile)

    def set_epoch(self, epoch: int) -> None:
        """Draw the frames, crops and substitutes of `epoch` (call before iterating the loader)."""
        if epoch < 0:
            raise InputError(f"epoch must be >= 0, got {epoch}")
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
        clip = read_frames(
            entry.path,
            lambda n: self.frame_indices(entry.video_id, n),
            short_side=self.short_side,
            decoder=self.decoder,
        )  # frames [T, H, W, 3]
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
