"""The training machinery that `train-video` and `train-attrs` share.

Accelerate (devices, processes, mixed precision, gradient accumulation, checkpoint state), AdamW
with the model's parameter groups, cosine schedule with linear warm-up, a seeded per-epoch batch
sampler, validation every N epochs, `metrics.jsonl` (and TensorBoard where installed), resumable
Accelerate state per epoch, and best/last checkpoints written by the stage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from bike_cli.config.compat import AUTHORS
from bike_cli.engine.distributed import writer_lock
from bike_cli.engine.resume import CONFIG_FILE, METRICS_FILE, check_resume_config, trim_metrics
from bike_cli.engine.runtime import PRECISIONS, Progress, cores_beside_workers
from bike_cli.errors import InputError
from bike_cli.io import train_state
from bike_cli.io.atomic import append_line, copy_file, remove_stale_temps, write_text
from bike_cli.io.outputs import check_distinct_outputs, check_folder_output
from bike_cli.io.train_state import STATE_FILE

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
ADAMW_BETAS = (0.9, 0.999)  # the paper's Table A.1 (and the authors' utils/solver.py)


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
        for name in ("epochs", "batch_size", "grad_accum", "val_every"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.resume and self.overwrite:
            raise InputError("--resume continues the run in --out, --overwrite discards it: give one of them")


@dataclass
class TrainSummary:
    out: Path
    epochs: int
    steps: int
    best_epoch: int
    best_metrics: dict
    last_metrics: dict
    seconds: float
    is_main: bool = True
    finished_before: bool = False  # --resume of a run that had trained every epoch: nothing was done


@dataclass
class RunState:
    """What a checkpoint folder records besides the Accelerate state."""

    epoch: int = 0
    step: int = 0
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_score: float = -math.inf


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


def accelerate_precision(precision: str, cuda: bool, compat: str = "bike", bf16_supported: bool = True) -> str:
    """Accelerate's `mixed_precision` for `--precision` on this device under the profile.

    The CPU trains in fp32 ("no") whatever is asked; `fp32` is fp32 everywhere; an explicit bf16/fp16
    is kept. `auto` on CUDA: bf16 where supported, else fp16 (fp16 comes with a GradScaler); under
    `--compat authors` always fp16, as their train.py (`--precision amp`: torch.cuda.amp autocast and
    GradScaler)."""
    if not cuda or precision == "fp32":
        return "no"
    if precision != "auto":
        return precision
    if compat == AUTHORS:
        return "fp16"
    return "bf16" if bf16_supported else "fp16"


def make_accelerator(settings: LoopSettings, compat: str = "bike"):
    """An Accelerator for this machine and profile (precision: `accelerate_precision`)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from bike_cli.engine.runtime import resolve_device

    cuda = resolve_device(settings.device).type == "cuda"
    mixed = accelerate_precision(settings.precision, cuda, compat, cuda and torch.cuda.is_bf16_supported())
    accelerator = Accelerator(cpu=not cuda, mixed_precision=mixed, gradient_accumulation_steps=settings.grad_accum)
    set_seed(settings.seed)
    return accelerator


def _step_before_optimizer(scheduler) -> None:
    """Step the schedule per batch, where the first optimiser step may come later (accumulation):
    intended, so torch's warning about that order is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        scheduler.step()


def latest_checkpoint(out: Path) -> Path | None:
    done = sorted(p.parent for p in (out / "checkpoints").glob(f"epoch_*/{STATE_FILE}"))
    return done[-1] if done else None


def _tensorboard(out: Path):
    """A TensorBoard writer into `out/tensorboard` where the tensorboard package is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


class Trainer:
    """Runs the epochs of one training stage.

    The stage supplies the model (whose forward returns the loss), its parameter groups, the dataset,
    a function that moves a batch to the device and returns the model's arguments, an optional
    validation function returning metrics in %, and a function that writes last/best checkpoints.
    """

    def __init__(self, settings: LoopSettings, accelerator, stage: str) -> None:
        settings.check()
        self.settings, self.accelerator, self.stage = settings, accelerator, stage

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def fit(
        self,
        model: nn.Module,
        param_groups: list[dict],
        dataset: Dataset,
        batch_inputs: Callable[[object], tuple],
        *,
        lr: float,
        weight_decay: float,
        save_checkpoint: Callable[[nn.Module, dict, bool], None],
        validate: Callable[[nn.Module], dict] | None = None,
        collate_fn: Callable | None = None,
        progress_factory: Callable[[], Progress] = Progress,
        config=None,
        compat: str = "bike",
        batch_loader: Callable[[Sampler], Iterable] | None = None,
    ) -> TrainSummary:
        """Train `settings.epochs` epochs (resuming if asked); returns the summary on every process.

        `batch_loader(batch_sampler)`: the batches, in the place of a DataLoader (rows held in memory)."""
        from bike_cli.config.recipe import save_resolved

        started = time.perf_counter()
        s, acc = self.settings, self.accelerator
        authors = compat == AUTHORS
        batches = EpochBatches(len(dataset), s.batch_size, acc.process_index, acc.num_processes, s.seed,
                               drop_last=authors)
        if len(batches) == 0:
            raise InputError(f"{len(dataset)} training samples are fewer than the {acc.num_processes} processes")
        workers = 0 if batch_loader is not None else s.workers
        loader = batch_loader(batches) if batch_loader is not None else DataLoader(
            dataset, batch_sampler=batches, num_workers=s.workers, collate_fn=collate_fn,
            pin_memory=torch.cuda.is_available())
        optimizer = torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, betas=ADAMW_BETAS, eps=1e-8)
        if authors:  # their cadence: the factor of the batch index; a step per `grad_accum` batches of an epoch
            steps_per_epoch = len(batches) // s.grad_accum
            if steps_per_epoch == 0:
                log.warning("--grad-accum %d is more than the %d batches of an epoch: under --compat authors an "
                            "epoch's accumulation starts afresh, so no optimiser step is taken", s.grad_accum,
                            len(batches))
            schedule = authors_warmup_cosine(s.warmup_epochs, s.epochs, len(batches))
        else:
            steps_per_epoch = math.ceil(len(batches) / s.grad_accum)
            schedule = warmup_cosine(round(s.warmup_epochs * steps_per_epoch), s.epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        model, optimizer = acc.prepare(model, optimizer)  # the scheduler is not: it would step once per process
        state = self._resume(model, optimizer, scheduler, config)
        if self.is_main:
            trim_metrics(s.out, state.epoch)
            if config is not None:
                save_resolved(config, s.out / CONFIG_FILE, stage=self.stage)
            log.info("training on %d samples, %d process(es), global batch %d, %d steps/epoch",
                     len(dataset), acc.num_processes, batches.global_batch, steps_per_epoch)
        board = _tensorboard(s.out) if self.is_main else None
        line: dict = {}
        for epoch in range(state.epoch + 1, s.epochs + 1):
            batches.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            epoch_start = time.perf_counter()
            progress = progress_factory() if self.is_main else Progress()
            with cores_beside_workers(acc.device, workers):  # CPU: torch threads beside the loader workers
                loss = self._epoch(model, loader, optimizer, scheduler, batch_inputs, progress, epoch, authors)
            state.step += steps_per_epoch
            metrics = {}
            if validate is not None and (epoch % s.val_every == 0 or epoch == s.epochs):
                metrics = validate(acc.unwrap_model(model))
            line = {"epoch": epoch, "step": state.step, "train_loss": loss, "lr": scheduler.get_last_lr()[0],
                    **metrics, "seconds": time.perf_counter() - epoch_start}
            self._end_epoch(model, state, line, metrics, save_checkpoint, board, optimizer, scheduler)
        acc.wait_for_everyone()
        if board is not None:
            board.close()
        return TrainSummary(s.out, s.epochs, state.step, state.best_epoch, state.best_metrics, line,
                            time.perf_counter() - started, self.is_main)

    def _resume(self, model, optimizer, scheduler, config) -> RunState:
        """Load the latest complete checkpoint folder (only bike's own, code-free state files)."""
        s, acc = self.settings, self.accelerator
        s.out.mkdir(parents=True, exist_ok=True)
        if not s.resume:
            return RunState()
        if config is not None:
            check_resume_config(config, s.out)
        latest = latest_checkpoint(s.out)
        if latest is None:
            log.info("--resume: no checkpoint in %s yet; starting from the first epoch", s.out)
            return RunState()
        loaded = train_state.load_state(latest, acc.process_index)
        try:
            acc.unwrap_model(model).load_state_dict(loaded["model"])
            optimizer.load_state_dict(loaded["optimizer"])
            scheduler.load_state_dict(loaded["scheduler"])
            if loaded["scaler"] is not None and getattr(acc, "scaler", None) is not None:
                acc.scaler.load_state_dict(loaded["scaler"])
            state = RunState(**loaded["trainer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InputError(f"{latest} does not fit this run ({type(err).__name__}: {err})") from None
        if loaded["rng"] is not None:
            train_state.restore_rng(loaded["rng"])
        log.info("resumed from %s (epoch %d done)", latest, state.epoch)
        return state

    def _epoch(self, model, loader, optimizer, scheduler, batch_inputs, progress: Progress, epoch: int,
               authors: bool = False) -> float:
        """One epoch. bike steps the schedule per optimiser step; `authors` per batch (their train.py),
        and counts the accumulation from each epoch's first batch (an epoch's last incomplete group
        steps nothing: its gradients join the next epoch's first step, as theirs do)."""
        acc = self.accelerator
        model.train()
        if authors:
            acc.step = 0  # Accelerate's accumulation counter: (i + 1) % grad_accum == 0 within the epoch
        total, count = 0.0, 0
        progress.start(len(loader), f"epoch {epoch}")
        try:
            for batch in loader:
                inputs = batch_inputs(batch)
                with acc.accumulate(model):
                    with acc.autocast():
                        loss = model(*inputs)
                    acc.backward(loss)
                    optimizer.step()
                    if authors:
                        _step_before_optimizer(scheduler)
                    elif acc.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                total += loss.item()
                count += 1
                progress.advance(1)
        finally:
            progress.stop()
        return total / max(1, count)

    def _save_state(self, folder: Path, model, optimizer, scheduler) -> None:
        """The resumable state of every process (bike's code-free format, `bike_cli.io.train_state`)."""
        acc = self.accelerator
        if self.is_main:  # a folder of an earlier run goes first: the state file marks a complete one
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        train_state.save_process_state(folder, acc.process_index)
        if self.is_main:
            scaler = getattr(acc, "scaler", None)
            train_state.save_shared_state(folder, acc.unwrap_model(model).state_dict(), optimizer.state_dict(),
                                          scheduler.state_dict(), scaler.state_dict() if scaler is not None else None)
        acc.wait_for_everyone()

    def _end_epoch(self, model, state: RunState, line: dict, metrics: dict, save_checkpoint, board,
                   optimizer=None, scheduler=None) -> None:
        """Log the epoch, write the stage's checkpoints and the resumable Accelerate state."""
        acc, out = self.accelerator, self.settings.out
        key = "val_mAP" if "val_mAP" in metrics else "val_top1"
        score = metrics.get(key, -line["train_loss"])  # without validation, the lowest training loss is best
        improved = score > state.best_score
        state.epoch = line["epoch"]
        if improved:
            state.best_epoch, state.best_metrics, state.best_score = line["epoch"], metrics, score
        folder = out / "checkpoints" / f"epoch_{line['epoch']:04d}"
        self._save_state(folder, model, optimizer, scheduler)
        if self.is_main:
            append_line(out / METRICS_FILE, json.dumps(line))
            log.info("epoch %d: %s", line["epoch"],
                     ", ".join(f"{k} {v:.4g}" for k, v in line.items() if k != "epoch"))
            save_checkpoint(acc.unwrap_model(model), line, improved)
            write_text(folder / STATE_FILE, json.dumps(state.__dict__))  # last: marks the folder complete
            for old in sorted((out / "checkpoints").glob("epoch_*"))[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)
            if board is not None:
                for k, v in line.items():
                    if k not in ("epoch", "step"):
                        board.add_scalar(k, v, state.step)
                board.flush()
        acc.wait_for_everyone()


def copy_best(out: Path, improved: bool) -> None:
    """best.pt follows last.pt whenever the epoch improved on the best so far (an atomic copy)."""
    if improved:
        copy_file(out / "last.pt", out / "best.pt")


RUN_FILES = ("last.pt", "best.pt", METRICS_FILE, CONFIG_FILE)


def check_run_outputs(out: Path, inputs: dict) -> None:
    """Refuse a run whose input is one of the files it writes into its run folder."""
    check_folder_output("--out", out)
    check_distinct_outputs(inputs, {f"--out's {name}": out / name for name in RUN_FILES})


@contextlib.contextmanager
def run_folder_lock(out: Path, accelerator):
    """Hold the run folder's WriterLock (rank 0 for the whole launch) while a stage writes into it."""
    check_folder_output("--out", out)
    with writer_lock(out, folder=True, is_main=accelerator.is_main_process, world_size=accelerator.num_processes):
        if accelerator.is_main_process and out.is_dir():
            remove_stale_temps(out)  # of a writer killed mid-write: the lock says none is alive
        yield


def metrics_over_processes(scores: list, labels: list) -> dict:
    """`val_*` metrics (in %) of the whole validation set from every process's share of it.

    scores: this process's float [n, K] arrays; labels: its int [n] or multi-hot [n, K] arrays.
    """
    import numpy as np
    from accelerate.utils import gather_object

    from bike_cli.eval.metrics import recognition_metrics

    mine = (np.concatenate(scores), np.concatenate(labels)) if scores else (None, None)
    parts = [(s, y) for s, y in gather_object([mine]) if s is not None]
    all_scores = np.concatenate([s for s, _ in parts])
    all_labels = np.concatenate([y for _, y in parts])
    return {f"val_{k}": v for k, v in recognition_metrics(all_scores, all_labels).items()}


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
