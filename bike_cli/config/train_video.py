"""Settings of `bike train-video`: one dataclass, filled from defaults < recipe YAML < CLI options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bike_cli.config.prompts import DEFAULT_TEMPLATE


@dataclass
class TrainVideoConfig:
    """Every setting of a Video-branch training run (the paper's defaults for K400 ViT-B/32 8f)."""

    # data: a feature cache (backbone frozen) or a video list (end to end)
    features: Path | None = None  # train feature cache from extract-features
    videos: Path | None = None  # train video list (end-to-end fine-tuning)
    root: Path | None = None  # folder that relative paths of the train list start from
    classes: Path | None = None  # class-name file
    val_features: Path | None = None
    val_videos: Path | None = None
    val_root: Path | None = None
    out: Path = Path("runs/video")
    # model
    model: str | None = None  # open_clip name; from a cache: the cache's model [default]
    pretrained: str | None = None  # tag, checkpoint file or none; from a cache: the cache's weights
    init_from: Path | None = None  # start from a trained Video branch (bike run folder / best.pt)
    quick_gelu: bool | None = None
    allow_model_mismatch: bool = False  # train on a cache made by another CLIP than --pretrained (warn only)
    frames: int = 8  # T frames per clip
    head: str = "vcs"  # mean | vcs
    temporal: str = "transformer"  # none | transformer
    temporal_layers: int = 6
    vcs_tokens: str | None = None  # words (Eq. 5) | all (the authors' code) [default: words; all under
    # --compat authors with an authors' --init-from checkpoint]
    tau: float = 0.01  # VCS softmax temperature
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])
    # optimisation
    epochs: int = 30
    batch_size: int = 256  # per optimiser step, over all processes (before gradient accumulation)
    grad_accum: int = 1
    lr: float = 5e-5  # new layers (temporal transformer, logit scale)
    clip_lr_ratio: float = 0.1  # CLIP visual encoder lr = lr x ratio (end-to-end mode)
    weight_decay: float = 0.2
    warmup_epochs: float = 5.0
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (mixed precision on GPU)
    grad_checkpointing: bool = False
    # augmentation of end-to-end training (the paper's: random resized crop, flip, grayscale)
    crop_scale_min: float = 0.08
    flip_prob: float = 0.5
    grayscale_prob: float = 0.2
    # run
    seed: int = 0
    shots: int | None = None  # few-shot: K training videos per class, a seeded sample
    samples_per_epoch: int | None = None  # cycle the training set to this many samples per epoch
    val_every: int = 1  # validate every N epochs
    workers: int = 2
    device: str | None = None  # cpu | cuda [default: the GPU when there is one, else cpu]
    cache_in_memory: str = "auto"  # --features: hold the rows in RAM / GPU memory: auto | on | off
    resume: bool = False
    # reproduction (bike_cli.config.profile, docs/reproducing.md)
    compat: str = "bike"  # bike | authors: their optimiser groups, scheduler steps, no logit-scale clamp
    loss: str | None = None  # bike (Eq. 7) | authors (their KL loss) [default: the profile's]
    ignore_visual_weights: bool = False  # --init-from a checkpoint whose visual encoder did not make the cache
    overwrite: bool = False  # discard a run already in `out` (checkpoints, metrics, config)
