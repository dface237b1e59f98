"""The settings, state and summary of a training run, and the Accelerator it runs under."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bike_cli.config.profile import FP16, get_profile
from bike_cli.engine.runtime import PRECISIONS, resolve_device
from bike_cli.errors import InputError
from bike_cli.io.train_state import STATE_FILE


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
    if get_profile(compat).auto_precision == FP16:
        return "fp16"
    return "bf16" if bf16_supported else "fp16"


def make_accelerator(settings: LoopSettings, compat: str = "bike"):
    """An Accelerator for this machine and profile (precision: `accelerate_precision`)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed


    cuda = resolve_device(settings.device).type == "cuda"
    mixed = accelerate_precision(settings.precision, cuda, compat, cuda and torch.cuda.is_bf16_supported())
    accelerator = Accelerator(cpu=not cuda, mixed_precision=mixed, gradient_accumulation_steps=settings.grad_accum)
    set_seed(settings.seed)
    return accelerator

def latest_checkpoint(out: Path) -> Path | None:
    done = sorted(p.parent for p in (out / "checkpoints").glob(f"epoch_*/{STATE_FILE}"))
    return done[-1] if done else None
