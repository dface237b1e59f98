"""What each training epoch sees and the learning rate of each step.

`EpochBatches`: the seeded per-epoch batches of every process; `RepeatedDataset`: a few-shot set
cycled to a full epoch's length; `warmup_cosine` (bike) and `authors_warmup_cosine` (their train.py):
the LR factor per optimiser step; `apply_schedule`: the lr of a resumed schedule's total.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler


class EpochBatches(Sampler[list[int]]):
    """Global batches of a seeded per-epoch permutation; this process gets every world-th index of each.

    Every process sees batches of the same size (the gathered loss needs that): a last batch is cut
    to a multiple of the world size, and dropped when smaller than it; `drop_last` drops every last
    batch smaller than the global batch (the authors' training DataLoader, `drop_last=True`).
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, drop_last: bool = False) -> None:
        self.n, self.rank, self.world, self.seed, self.drop_last = n, rank, world, seed, drop_last
        self.global_batch = max(world, min(global_batch, n) // world * world)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _sizes(self) -> list[int]:
        full, rest = divmod(self.n, self.global_batch)
        rest = 0 if self.drop_last else rest - rest % self.world
        return [self.global_batch] * full + ([rest] if rest else [])

    def __len__(self) -> int:
        return len(self._sizes())

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        start = 0
        for size in self._sizes():
            yield perm[start : start + size][self.rank :: self.world].tolist()
            start += size

class RepeatedDataset(Dataset):
    """`length` samples per epoch drawn by cycling through `dataset` (few-shot: as many steps per
    epoch as a full-data epoch). Each pass over the data sees its own random augmentation: pass r
    of epoch e runs the underlying dataset as epoch e * passes + r."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset, self.length = dataset, max(length, len(dataset))
        self.passes = math.ceil(self.length / len(dataset))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        n = len(self.dataset)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch * self.passes + i // n)
        return self.dataset[i % n]


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """LR factor per optimiser step: linear warm-up over `warmup` steps, then cosine to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def authors_warmup_cosine(warmup_epochs: float, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """LR factor per optimiser step as the authors' train.py steps WarmupCosineAnnealingLR.

    Their scheduler is stepped at iteration i of epoch e when i == 0 or (i + 1) % 10 == 0, with the
    fractional epoch x = e + i / steps_per_epoch; the factor is x / warmup during the warm-up, then
    (1 + cos(pi * min(1, (x - warmup) / (epochs - warmup)))) / 2, held between two steps."""

    def factor(step: int) -> float:
        epoch, i = divmod(step, steps_per_epoch)
        last = 0 if i < 9 else (i + 1) // 10 * 10 - 1  # the iteration of the latest scheduler step
        x = epoch + last / steps_per_epoch
        if x < warmup_epochs:
            return x / warmup_epochs
        progress = min(1.0, (x - warmup_epochs) / max(1e-12, epochs - warmup_epochs))
        return (math.cos(math.pi * progress) + 1) / 2

    return factor

def apply_schedule(optimizer, scheduler) -> None:
    """Set each group's lr to the factor of the scheduler's lambdas at its restored step.

    A resumed LambdaLR keeps the lr of the step it was saved at until its next step; where the total
    changed (a larger `--epochs`), that lr is of the old schedule: the first step would use it."""
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def step_before_optimizer(scheduler) -> None:
    """Step the schedule per batch, where the first optimiser step may come later (accumulation):
    intended, so torch's warning about that order is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        scheduler.step()
