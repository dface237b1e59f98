"""The training loop that `train-video` and `train-attrs` share.

Accelerate (devices, processes, mixed precision, gradient accumulation), AdamW with the model's
parameter groups, cosine schedule with linear warm-up (`engine.schedule`), a seeded per-epoch batch
sampler, validation every N epochs, `metrics.jsonl` (and TensorBoard where installed), resumable
state per epoch, and best/last checkpoints written by the stage.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from bike_cli.config.profile import PER_BATCH, get_profile
from bike_cli.config.recipe import config_to_dict
from bike_cli.engine.loop_settings import LoopSettings, RunState, TrainSummary, latest_checkpoint
from bike_cli.engine.resume import (
    CONFIG_FILE,
    METRICS_FILE,
    apply_schedule,
    check_resume_config,
    check_resume_epochs,
    log_new_total,
    trim_metrics,
)
from bike_cli.engine.runtime import Progress, cores_beside_workers, loader_workers
from bike_cli.engine.schedule import EpochBatches, authors_warmup_cosine, step_before_optimizer, warmup_cosine
from bike_cli.errors import InputError
from bike_cli.io import train_state
from bike_cli.io.atomic import append_line, copy_file, write_text
from bike_cli.io.checkpoints import BranchCheckpoint, save_checkpoint
from bike_cli.io.run_config import save_resolved
from bike_cli.io.train_state import STATE_FILE
from bike_cli.io.write_errors import make_folder

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 2
ADAMW_BETAS = (0.9, 0.999)  # the paper's Table A.1 (and the authors' utils/solver.py)


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
        started = time.perf_counter()
        s, acc = self.settings, self.accelerator
        authors = get_profile(compat).lr_cadence == PER_BATCH
        batches, loader, workers = self._loader(dataset, collate_fn, batch_loader, compat)
        optimizer = torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, betas=ADAMW_BETAS, eps=1e-8)
        steps_per_epoch, schedule = self._schedule(len(batches), authors)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        model, optimizer = acc.prepare(model, optimizer)  # the scheduler is not: it would step once per process
        state = self._resume(model, optimizer, scheduler, config)
        if self.is_main:
            self._start_log(state, config, len(dataset), batches.global_batch, steps_per_epoch)
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

    def _loader(self, dataset: Dataset, collate_fn: Callable | None,
                batch_loader: Callable[[Sampler], Iterable] | None,
                compat: str) -> tuple[EpochBatches, Iterable, int]:
        """This process's batches of `dataset`, what yields them, and how many loader workers it runs."""
        s, acc = self.settings, self.accelerator
        batches = EpochBatches(len(dataset), s.batch_size, acc.process_index, acc.num_processes, s.seed,
                               drop_last=get_profile(compat).drop_last)
        if len(batches) == 0:
            raise InputError(f"{len(dataset)} training samples are fewer than the {acc.num_processes} processes")
        if batch_loader is not None:
            return batches, batch_loader(batches), 0
        workers = loader_workers(s.workers, len(batches))
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_fn,
                            pin_memory=torch.cuda.is_available())
        return batches, loader, workers

    def _start_log(self, state: RunState, config: object, samples: int, global_batch: int,
                   steps_per_epoch: int) -> None:
        """On the main process: drop metrics lines past the resumed epoch, save the settings, say the size."""
        s = self.settings
        trim_metrics(s.out, state.epoch)
        if config is not None:
            save_resolved(config, s.out / CONFIG_FILE, stage=self.stage)
        log.info("training on %d samples, %d process(es), global batch %d, %d steps/epoch",
                 samples, self.accelerator.num_processes, global_batch, steps_per_epoch)

    def _schedule(self, batches: int, authors: bool) -> tuple[int, Callable[[int], float]]:
        """Optimiser steps per epoch and the LR factor per step (bike's, or the authors' per-batch one)."""
        s = self.settings
        if authors:  # their cadence: the factor of the batch index; a step per `grad_accum` batches of an epoch
            steps_per_epoch = batches // s.grad_accum
            if steps_per_epoch == 0:
                log.warning("--grad-accum %d is more than the %d batches of an epoch: under --compat authors an "
                            "epoch's accumulation starts afresh, so no optimiser step is taken", s.grad_accum,
                            batches)
            return steps_per_epoch, authors_warmup_cosine(s.warmup_epochs, s.epochs, batches)
        steps_per_epoch = math.ceil(batches / s.grad_accum)
        return steps_per_epoch, warmup_cosine(round(s.warmup_epochs * steps_per_epoch), s.epochs * steps_per_epoch)

    def _resume(self, model, optimizer, scheduler, config) -> RunState:
        """Load the latest complete checkpoint folder (only bike's own, code-free state files)."""
        s, acc = self.settings, self.accelerator
        make_folder(s.out)
        if not s.resume:
            return RunState()
        was = check_resume_config(config, s.out) if config is not None else None
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
        check_resume_epochs(s.out, state.epoch, s.epochs)
        apply_schedule(optimizer, scheduler)  # the lr of the total asked for now (a larger --epochs)
        if self.is_main:
            log_new_total(s.out, was, s.epochs, state.epoch)
        if loaded["rng"] is not None:
            train_state.restore_rng(loaded["rng"])
        log.info("resumed from %s (epoch %d done)", latest, state.epoch)
        return state

    def _epoch(self, model, loader, optimizer, scheduler, batch_inputs, progress: Progress, epoch: int,
               authors: bool = False) -> float:
        """One epoch. bike steps the schedule per optimiser step, and an epoch's last, incomplete
        accumulation group steps too (ceil(batches / grad_accum) steps, the count the schedule is
        made for); `authors` steps it per batch (their train.py) and counts the accumulation from each
        epoch's first batch (an epoch's last incomplete group steps nothing: its gradients join the next
        epoch's first step, as theirs do)."""
        acc = self.accelerator
        model.train()
        acc.step = 0  # Accelerate's accumulation counter: (i + 1) % grad_accum == 0 within the epoch
        last = len(loader) - 1
        total, count = 0.0, 0
        progress.start(len(loader), f"epoch {epoch}")
        try:
            for i, batch in enumerate(loader):
                if i == last and not authors:  # the loader is not Accelerate's: it cannot tell the end
                    acc.step = acc.gradient_accumulation_steps - 1
                inputs = batch_inputs(batch)
                with acc.accumulate(model):
                    with acc.autocast():
                        loss = model(*inputs)
                    acc.backward(loss)
                    optimizer.step()
                    if authors:
                        step_before_optimizer(scheduler)
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
            make_folder(folder)
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


def branch_saver(out: Path, kind: str, config, clip: dict, class_names: list[str],
                 model_args: dict) -> Callable[[nn.Module, dict, bool], None]:
    """The `save_checkpoint` of a branch's run: `last.pt` (bike's format, with the `model_args` that
    rebuild the branch) every epoch, `best.pt` when it improved."""

    def save(unwrapped: nn.Module, line: dict, improved: bool) -> None:
        ckpt = BranchCheckpoint(config=config_to_dict(config), clip=clip, class_names=class_names,
                                epoch=line["epoch"], metrics=line, state_dict=unwrapped.state_dict(),
                                model_args=model_args)
        save_checkpoint(out / "last.pt", ckpt, kind)
        copy_best(out, improved)

    return save
