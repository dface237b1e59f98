"""The settings and summary of a training run, and the Accelerator it runs under.

The `--compat` profile reaches the engine as the `Profile` object the stage resolved; each of its
fields the engine implements is looked up in a table keyed by the field's value; a Profile holds only
the values `config.profile.RULE_NAMES` lists, and tests/test_config_profile.py holds each table to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bike_cli.config.profile import BF16_ELSE_FP16, FP16, Profile
from bike_cli.engine.runtime import PRECISIONS, resolve_device
from bike_cli.errors import InputError

MIXED_PRECISION_AUTO: dict[str, Callable[[bool], str]] = {  # Profile.auto_precision -> bf16 supported -> mode
    BF16_ELSE_FP16: lambda bf16: "bf16" if bf16 else "fp16",  # fp16 comes with a GradScaler
    FP16: lambda bf16: "fp16",  # their train.py `--precision amp`: torch.cuda.amp autocast and GradScaler
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
    """What one `Trainer.fit` follows besides the run's `LoopSettings`: AdamW's lr and weight decay
    (for the parameter groups that set none) and the profile whose loop rules apply."""

    lr: float
    weight_decay: float
    profile: Profile


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


def accelerate_precision(precision: str, cuda: bool, profile: Profile, bf16_supported: bool = True) -> str:
    """Accelerate's `mixed_precision` for `--precision` on this device under the profile.

    The CPU trains in fp32 ("no") whatever is asked; `fp32` is fp32 everywhere; an explicit bf16/fp16
    is kept; `auto` on CUDA follows the profile's `auto_precision` (`MIXED_PRECISION_AUTO`)."""
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
