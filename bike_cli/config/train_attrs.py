"""Settings of `bike train-attrs`: one dataclass, filled from defaults < recipe YAML < CLI options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bike_cli.config.prompts import DEFAULT_TEMPLATE


@dataclass
class TrainAttrsConfig:
    """Every setting of an Attributes-branch training run (Sec. 2.2, Eq. 8)."""

    attributes: Path | None = None  # train attributes CSV from gen-attributes
    val_attributes: Path | None = None
    classes: Path | None = None  # class-name file [default: the names the attributes file records]
    out: Path = Path("runs/attrs")
    model: str | None = None  # text encoder's CLIP [default: the one that generated the attributes]
    pretrained: str | None = None
    quick_gelu: bool | None = None
    allow_model_mismatch: bool = False  # a --model other than the one that generated the attributes (warn only)
    tune: str = "head"  # head (frozen encoder + MLPs, the authors' code) | full (Table 6e: fine-tuned)
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])  # class prompts
    epochs: int = 30
    batch_size: int = 256
    grad_accum: int = 1
    lr: float = 5e-5  # new layers (MLPs, logit scale)
    clip_lr_ratio: float = 0.1  # the fine-tuned text encoder (--tune full)
    weight_decay: float = 0.2
    warmup_epochs: float = 5.0
    precision: str = "auto"
    seed: int = 0
    val_every: int = 1
    workers: int = 0  # samples are embeddings or token rows in memory: workers rarely help
    device: str | None = None  # cpu | cuda [default: the GPU when there is one, else cpu]
    resume: bool = False
    compat: str = "bike"  # bike | authors: their optimiser groups, scheduler steps, no logit-scale clamp
    loss: str | None = None  # bike (Eq. 8) | authors (their KL loss) [default: the profile's]
    overwrite: bool = False  # discard a run already in `out` (checkpoints, metrics, config)
