"""The training loop of `train-video` and `train-attrs` (settings, Accelerator, seeded batches, AdamW, the lr
schedule at the profile's cadence, validation); a non-finite loss or weights raise `TrainingDiverged`."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from bike_cli.config import profile as pf
from bike_cli.config.profile import Profile
from bike_cli.engine.run_folder import CheckpointHeader, RunFolder, TrainSummary
from bike_cli.engine.runtime import PRECISIONS, cores_beside_workers, loader_workers, resolve_device, writer_lock
from bike_cli.errors import BikeError, InputError
from bike_cli.io.checkpoints import BEST_FILE, LAST_FILE
from bike_cli.io.guard import PathGuard
from bike_cli.io.train_state import RunState
from bike_cli.models.authors import GroupRule, decay_all_groups, decay_exempt_groups
from bike_cli.progress import Progress

log = logging.getLogger(__name__)

ADAMW_BETAS = (0.9, 0.999)  # the paper's Table A.1 (and the authors' utils/solver.py)
PARAM_GROUPS: dict[str, GroupRule] = {pf.DECAY_EXEMPT: decay_exempt_groups, pf.DECAY_ALL: decay_all_groups}
MIXED_PRECISION_AUTO: dict[str, Callable[[bool], str]] = {  # Profile.auto_precision -> bf16 supported -> mode
    pf.BF16_ELSE_FP16: lambda bf16: "bf16" if bf16 else "fp16",  # fp16 comes with a GradScaler
    pf.FP16: lambda bf16: "fp16",  # their train.py `--precision amp`: torch.cuda.amp autocast and GradScaler
}


@dataclass
class LoopSettings:
    """The settings every training stage has (its config dataclass provides them)."""

    out: Path
    epochs: int
    batch_size: int
    grad_accum: int
    warmup_epochs: float
    precision: str
    seed: int
    val_every: int
    workers: int
    resume: bool
    device: str | None = None
    overwrite: bool = False

    @classmethod
    def of(cls, cfg) -> LoopSettings:
        return cls(**{name: getattr(cfg, name) for name in cls.__dataclass_fields__})

    def check(self) -> None:
        """The settings no range declares (the ranges are `config.ranges.check_ranges`', which the stage called)."""
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.resume and self.overwrite:
            raise InputError("--resume continues the run in --out, --overwrite discards it: give one of them")


@dataclass(frozen=True)
class FitSettings:
    """AdamW's lr and weight decay (for groups that set none) and the profile whose loop rules apply."""

    lr: float
    weight_decay: float
    profile: Profile


def accelerate_precision(precision: str, cuda: bool, profile: Profile, bf16_supported: bool = True) -> str:
    """Accelerate's `mixed_precision` for `--precision`: "no" on the CPU or for fp32, bf16/fp16 kept, and
    `auto` on CUDA by the profile's `auto_precision` (`MIXED_PRECISION_AUTO`)."""
    if not cuda or precision == "fp32":
        return "no"
    if precision != "auto":
        return precision
    return MIXED_PRECISION_AUTO[profile.auto_precision](bf16_supported)


def make_accelerator(settings: LoopSettings, profile: Profile):
    """An Accelerator for this machine and profile (precision: `accelerate_precision`)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cuda = resolve_device(settings.device).type == "cuda"
    mixed = accelerate_precision(settings.precision, cuda, profile, cuda and torch.cuda.is_bf16_supported())
    accelerator = Accelerator(cpu=not cuda, mixed_precision=mixed, gradient_accumulation_steps=settings.grad_accum)
    set_seed(settings.seed)
    return accelerator


class EpochBatches(Sampler[list[int]]):
    """Global batches of a seeded per-epoch permutation; this process gets every world-th index of each.
    Every process sees equal batches (the gathered loss needs that): a last batch is cut to a multiple of
    the world size; `drop_last` drops any last batch under the global one (the authors' DataLoader)."""

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
    """`length` samples an epoch cycled from `dataset` (few-shot: a full epoch's steps); pass r of epoch e
    runs `dataset` as epoch e * passes + r (its own augmentation)."""

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
    """LR factor per batch as the authors' train.py steps WarmupCosineAnnealingLR: at iteration i of epoch e
    when i == 0 or (i + 1) % 10 == 0, at x = e + i / steps_per_epoch; x / warmup, then
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


def _per_optimizer_step(s: LoopSettings, batches: int) -> tuple[int, Callable[[int], float]]:
    """bike: ceil(batches / grad_accum) optimiser steps an epoch, the factor of the optimiser step."""
    steps_per_epoch = math.ceil(batches / s.grad_accum)
    return steps_per_epoch, warmup_cosine(round(s.warmup_epochs * steps_per_epoch), s.epochs * steps_per_epoch)


def _per_batch(s: LoopSettings, batches: int) -> tuple[int, Callable[[int], float]]:
    """Their cadence: the factor of the batch index; a step per `grad_accum` batches of an epoch."""
    steps_per_epoch = batches // s.grad_accum
    if steps_per_epoch == 0:
        log.warning("--grad-accum %d is more than the %d batches of an epoch: under --compat authors an epoch's "
                    "accumulation starts afresh, so no optimiser step is taken", s.grad_accum, batches)
    return steps_per_epoch, authors_warmup_cosine(s.warmup_epochs, s.epochs, batches)


# Profile.lr_cadence -> (whether the schedule steps every batch, accumulation restarting each epoch (their
# train.py); (settings, batches) -> (steps an epoch, lr factor))
LR_CADENCES = {pf.PER_OPTIMIZER_STEP: (False, _per_optimizer_step), pf.PER_BATCH: (True, _per_batch)}


class TrainingDiverged(BikeError):
    """The loss (or the weights) became NaN or infinite: the run stopped, keeping its last finite epoch."""


class _NonFiniteLoss(Exception):
    """The first non-finite loss, at `batch` (1-based) of `batches`; `after`: of the weights the epoch ends with."""

    def __init__(self, batch: int, batches: int, value: float, after: bool = False) -> None:
        self.batch, self.batches, self.value, self.after = batch, batches, value, after


@dataclass
class TrainBranch:
    """What a stage trains, how a batch reaches it, how it is validated, what its checkpoints record."""

    model: nn.Module  # forward(*inputs) -> the loss of the whole batch gathered over the processes (the same on each)
    param_groups: list[dict]
    inputs: Callable[[object], tuple]  # a batch -> the model's arguments, on the device
    validate: Callable[[nn.Module], dict] | None = None  # the unwrapped model -> val_* metrics in %
    checkpoint: CheckpointHeader | None = None


class Trainer:
    """Runs the epochs of one training stage in its `RunFolder`."""

    def __init__(self, settings: LoopSettings, accelerator, run: RunFolder,
                 progress_factory: Callable[[], Progress] = Progress) -> None:
        self.loop, self.accelerator, self.run, self.progress_factory = settings, accelerator, run, progress_factory

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def fit(self, branch: TrainBranch, settings: FitSettings, dataset: Dataset, *, collate_fn: Callable | None = None,
            batch_loader: Callable[[Sampler], Iterable] | None = None) -> TrainSummary:
        """Train `loop.epochs` epochs (resuming if asked); the summary on every process. `batch_loader(sampler)`:
        the batches in the place of a DataLoader (rows held in memory)."""
        started = time.perf_counter()
        s, acc, run = self.loop, self.accelerator, self.run
        per_batch, schedule_of = LR_CADENCES[settings.profile.lr_cadence]
        batches, loader, workers = self._loader(dataset, collate_fn, batch_loader, settings.profile)
        optimizer = torch.optim.AdamW(branch.param_groups, lr=settings.lr, weight_decay=settings.weight_decay,
                                      betas=ADAMW_BETAS, eps=1e-8)
        steps_per_epoch, schedule = schedule_of(s, len(batches))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        model, optimizer = acc.prepare(branch.model, optimizer)  # the scheduler is not: it would step once per process
        state = run.restore(acc.unwrap_model(model), optimizer, scheduler, getattr(acc, "scaler", None),
                            epochs=s.epochs, rank=acc.process_index)
        if state is None:
            state = RunState()
        else:  # the lr of the total asked for now: a resumed LambdaLR keeps the lr of the old schedule
            for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        if self.is_main:
            run.start(state)
            log.info("training on %d samples, %d process(es), global batch %d, %d steps/epoch",
                     len(dataset), acc.num_processes, batches.global_batch, steps_per_epoch)
        line: dict = {}
        try:
            for epoch in range(state.epoch + 1, s.epochs + 1):
                batches.set_epoch(epoch)
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(epoch)
                epoch_start = time.perf_counter()
                progress = self.progress_factory() if self.is_main else Progress()
                try:
                    with cores_beside_workers(acc.device, workers):  # CPU: torch threads beside the loader workers
                        loss = self._epoch(model, loader, optimizer, scheduler, branch.inputs, progress, epoch,
                                           per_batch)
                except _NonFiniteLoss as bad:
                    step = state.step + min(steps_per_epoch, math.ceil(bad.batch / s.grad_accum))
                    what = (f"the weights epoch {epoch} ends with (step {step}) give a training loss of {bad.value} "
                            "on its last batch" if bad.after else
                            f"the training loss is {bad.value} at epoch {epoch}, step {step} (batch {bad.batch} of "
                            f"{bad.batches})")
                    raise self._diverged(what, state, settings.lr) from None
                state.step += steps_per_epoch
                if not finite_weights(acc.unwrap_model(model)):  # the same weights on every process
                    raise self._diverged(f"the weights became NaN or infinite at epoch {epoch} (step {state.step})",
                                         state, settings.lr)
                metrics = {}
                if branch.validate is not None and (epoch % s.val_every == 0 or epoch == s.epochs):
                    metrics = branch.validate(acc.unwrap_model(model))
                line = {"epoch": epoch, "step": state.step, "train_loss": loss, "lr": scheduler.get_last_lr()[0],
                        **metrics, "seconds": time.perf_counter() - epoch_start}
                self._end_epoch(model, state, line, metrics, branch.checkpoint, optimizer, scheduler)
            acc.wait_for_everyone()
        finally:
            if self.is_main:
                run.close()
        return TrainSummary(s.out, s.epochs, state.step, state.best_epoch, state.best_metrics, line,
                            time.perf_counter() - started, self.is_main)

    def _diverged(self, what: str, state: RunState, lr: float) -> TrainingDiverged:
        """The one line of a diverged run: what, where, what was kept, and what to change."""
        again = "train again with --overwrite"
        if state.epoch == 0:
            kept, again = "nothing was saved", "train again"
        elif state.best_epoch == state.epoch:
            kept = f"{LAST_FILE} and {BEST_FILE} keep epoch {state.epoch}, the last finite one"
        else:
            kept = f"{LAST_FILE} keeps epoch {state.epoch}, the last finite one, and {BEST_FILE} epoch {state.best_epoch}"
        return TrainingDiverged(f"training diverged: {what}; {kept}. Lower --lr (now {lr:g}; e.g. {lr / 10:g}) "
                                f"and {again}")

    def _loader(self, dataset: Dataset, collate_fn: Callable | None, batch_loader: Callable[[Sampler], Iterable] | None,
                profile: Profile) -> tuple[EpochBatches, Iterable, int]:
        """This process's batches of `dataset`, what yields them, and how many loader workers it runs."""
        s, acc = self.loop, self.accelerator
        batches = EpochBatches(len(dataset), s.batch_size, acc.process_index, acc.num_processes, s.seed,
                               drop_last=profile.drop_last)
        if len(batches) == 0:
            raise InputError(f"{len(dataset)} training samples are fewer than the {acc.num_processes} processes")
        if batch_loader is not None:
            return batches, batch_loader(batches), 0
        workers = loader_workers(s.workers, len(batches))
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_fn,
                            pin_memory=torch.cuda.is_available())
        return batches, loader, workers

    def _epoch(self, model, loader, optimizer, scheduler, batch_inputs, progress: Progress, epoch: int,
               per_batch: bool) -> float:
        """One epoch. bike steps the schedule per optimiser step, an epoch's last incomplete accumulation group
        too (ceil(batches / grad_accum) steps); `per_batch` steps it per batch (their train.py), accumulation
        counted from each epoch's first batch (a last incomplete group's gradients join the next step)."""
        acc = self.accelerator
        model.train()
        acc.step = 0  # Accelerate's accumulation counter: (i + 1) % grad_accum == 0 within the epoch
        last = len(loader) - 1
        total, count = 0.0, 0
        progress.start(len(loader), f"epoch {epoch}")
        try:
            for i, batch in enumerate(loader):
                if i == last and not per_batch:  # the loader is not Accelerate's: it cannot tell the end
                    acc.step = acc.gradient_accumulation_steps - 1
                inputs = batch_inputs(batch)
                with acc.accumulate(model):
                    with acc.autocast():
                        loss = model(*inputs)
                    acc.backward(loss)
                    optimizer.step()
                    if per_batch:  # before the first optimiser step may come: intended, no torch warning
                        with warnings.catch_warnings():
                            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before")
                            scheduler.step()
                    elif acc.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                value = loss.item()  # the step's one host sync; the same value on every process (gathered loss)
                if not math.isfinite(value):
                    raise _NonFiniteLoss(i + 1, len(loader), value)
                total += value
                count += 1
                progress.advance(1)
        finally:
            progress.stop()
        if count:  # the weights last.pt would hold, on the epoch's last batch: one forward an epoch
            with torch.no_grad(), acc.autocast():
                value = model(*inputs).item()  # every process: the loss gathers over them
            if not math.isfinite(value):
                raise _NonFiniteLoss(count, len(loader), value, after=True)
        return total / max(1, count)

    def _end_epoch(self, model, state: RunState, line: dict, metrics: dict, checkpoint: CheckpointHeader | None,
                   optimizer, scheduler) -> None:
        """Every process saves its share of the epoch's state; then the run folder records the epoch."""
        acc, run = self.accelerator, self.run
        improved = run.end_epoch(state, line, metrics)
        if self.is_main:
            run.new_epoch_folder(state.epoch)
        acc.wait_for_everyone()
        shared = (acc.unwrap_model(model), optimizer, scheduler, getattr(acc, "scaler", None)) if self.is_main else ()
        run.save_state(state.epoch, acc.process_index, *shared)  # the main process writes the shared state too
        acc.wait_for_everyone()
        if self.is_main:
            run.finish_epoch(state, line, acc.unwrap_model(model), improved, checkpoint)
        acc.wait_for_everyone()


def finite_weights(model: nn.Module) -> bool:
    """Whether every float tensor of the state dict is finite (one host sync; not buffers: CLIP's mask holds -inf)."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack([t.isfinite().all() for t in tensors]).all()) if tensors else True


def run_training(cfg, stage: str, guard: PathGuard, profile: Profile,
                 train: Callable[[LoopSettings, object, RunFolder], TrainSummary]) -> TrainSummary:
    """What train-video and train-attrs share around their training: settings, Accelerator, the run
    folder's lock, then (under it) the folder's rules, the temp sweep, and `train(settings, acc, run)`."""
    settings = LoopSettings.of(cfg)
    settings.check()
    accelerator = make_accelerator(settings, profile)
    run = RunFolder(cfg.out, stage, resume=settings.resume, overwrite=settings.overwrite, config=cfg, guard=guard,
                    average_last=getattr(cfg, "average_last", None))  # train-video's --average-last
    with writer_lock(cfg.out, folder=True, is_main=accelerator.is_main_process, world_size=accelerator.num_processes):
        finished = run.check(settings.epochs)
        accelerator.wait_for_everyone()  # rank 0 has removed an --overwrite'n run before any rank reads
        if finished is not None:
            return finished
        if accelerator.is_main_process:  # of a writer killed mid-write: the lock says none is alive
            run.sweep_temps()
        return train(settings, accelerator, run)
