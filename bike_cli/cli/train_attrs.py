"""`bike train-attrs`: train the Attributes branch (a thin shell over stages.train_attrs)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bike_cli.cli.app import app, run_guarded
from bike_cli.cli.progress import RichProgress
from bike_cli.cli.train_video import print_train_summary
from bike_cli.config.recipe import build_config
from bike_cli.config.train_attrs import TrainAttrsConfig
from bike_cli.stages.train_attrs import run_train_attrs


@app.command("train-attrs")
def train_attrs(
    attributes: Optional[Path] = typer.Option(None, "--attributes", help="Training attributes CSV from gen-attributes."),
    val_attributes: Optional[Path] = typer.Option(None, "--val-attributes", help="Validation attributes CSV."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names (`id,name` CSV or one per line), in label order."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder \\[default: runs/attrs]."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="YAML recipe; every option given here overrides it."),
    model: Optional[str] = typer.Option(None, "--model", help="open_clip architecture whose text encoder reads the sentences."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Pretrained tag, checkpoint file or none."),
    quick_gelu: Optional[bool] = typer.Option(None, "--quick-gelu/--no-quick-gelu", help="Force QuickGELU on or off."),
    tune: Optional[str] = typer.Option(None, "--tune", help="head: frozen text encoder + MLPs (cheap; the authors' code); full: the text encoder fine-tuned (Table 6e) \\[default: head]."),
    template: Optional[List[str]] = typer.Option(None, "--template", help="Class prompt template with {}; repeat to average several \\[default: 'This is a video about {}']."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs \\[default: 30]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch B of the B x B contrastive matrix \\[default: 256]."),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Gradient accumulation steps \\[default: 1]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of the new layers \\[default: 5e-5]."),
    clip_lr_ratio: Optional[float] = typer.Option(None, "--clip-lr-ratio", help="Text encoder lr = lr x this (--tune full) \\[default: 0.1]."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay \\[default: 0.2]."),
    warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs", help="Linear warm-up epochs \\[default: 5]."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto, fp32, bf16 or fp16."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed \\[default: 0]."),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate every N epochs \\[default: 1]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes \\[default: 0]."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue from the last complete checkpoint in --out."),
    compat: Optional[str] = typer.Option(None, "--compat", help="bike, or authors: the released code's AdamW groups, scheduler steps, loss and no logit-scale cap \\[default: bike]."),
    loss: Optional[str] = typer.Option(None, "--loss", help="bike (Eq. 8) or authors (their KL to softmax(10 x ground truth)) \\[default: the profile's]."),
) -> None:
    """Train BIKE's Attributes branch: attribute sentences -> class prompts (Eq. 8).

    Multi-GPU / multi-node: `accelerate launch --multi_gpu --num_processes N -m bike_cli train-attrs ...`.
    """
    options = dict(locals())
    options.pop("recipe")
    templates = options.pop("template")
    if templates is not None:
        options["templates"] = templates
    overrides = {k: v for k, v in options.items() if v is not None}
    cfg = run_guarded(build_config, TrainAttrsConfig, recipe, overrides, stage="train-attrs")
    summary = run_guarded(run_train_attrs, cfg, lambda: RichProgress("steps"))
    if summary.is_main:
        print_train_summary("train-attrs", summary)
