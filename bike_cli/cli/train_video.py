"""`bike train-video`: train the Video branch (a thin shell over stages.train_video)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from bike_cli.cli.app import app, console, run_guarded
from bike_cli.cli.progress import RichProgress
from bike_cli.config.recipe import build_config
from bike_cli.config.train_video import TrainVideoConfig
from bike_cli.stages.train_video import TrainSummary, run_train_video


@app.command("train-video")
def train_video(
    features: Optional[Path] = typer.Option(None, "--features", help="Training feature cache from extract-features (CLIP frozen: trains the temporal head and logit scale)."),
    videos: Optional[Path] = typer.Option(None, "--videos", help="Training video list (end to end: CLIP's visual encoder is fine-tuned too)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder that relative paths of --videos start from."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names (`id,name` CSV or one per line) \\[default: those recorded in the cache]."),
    val_features: Optional[Path] = typer.Option(None, "--val-features", help="Validation feature cache (all its views are scored)."),
    val_videos: Optional[Path] = typer.Option(None, "--val-videos", help="Validation video list (end-to-end mode)."),
    val_root: Optional[Path] = typer.Option(None, "--val-root", help="Folder that relative paths of --val-videos start from."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder: config.yaml, metrics.jsonl, best.pt, last.pt, checkpoints/ \\[default: runs/video]."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="YAML recipe (see recipes/); every option given here overrides it."),
    model: Optional[str] = typer.Option(None, "--model", help="open_clip architecture \\[default with --features: the cache's model]."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Pretrained tag, checkpoint file or none \\[default with --features: the cache's weights]."),
    quick_gelu: Optional[bool] = typer.Option(None, "--quick-gelu/--no-quick-gelu", help="Force QuickGELU on or off (OpenAI weights need it)."),
    allow_model_mismatch: Optional[bool] = typer.Option(None, "--allow-model-mismatch", help="Warn instead of refusing when --pretrained is not the model that made the cache (experts only)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from a trained Video branch: a bike run folder or checkpoint, or the authors' released BIKE checkpoint."),
    frames: Optional[int] = typer.Option(None, "--frames", "-T", help="Frames per clip T \\[default: 8]."),
    head: Optional[str] = typer.Option(None, "--head", help="mean (baseline) or vcs (Video Concept Spotting) \\[default: vcs]."),
    temporal: Optional[str] = typer.Option(None, "--temporal", help="none or transformer (6-layer temporal transformer before the head) \\[default: transformer]."),
    temporal_layers: Optional[int] = typer.Option(None, "--temporal-layers", help="Layers of the temporal transformer \\[default: 6]."),
    vcs_tokens: Optional[str] = typer.Option(None, "--vcs-tokens", help="VCS queries: words (the class name's word tokens, Eq. 5) or all (every context position, as the authors' code) \\[default: words]."),
    tau: Optional[float] = typer.Option(None, "--tau", help="VCS softmax temperature \\[default: 0.01]."),
    template: Optional[List[str]] = typer.Option(None, "--template", help="Class prompt template with {} for the name; repeat to average several \\[default: 'This is a video about {}']."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs \\[default: 30]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch over all processes: the B of the B x B contrastive matrix \\[default: 256]."),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Gradient accumulation steps \\[default: 1]."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of the new layers \\[default: 5e-5]."),
    clip_lr_ratio: Optional[float] = typer.Option(None, "--clip-lr-ratio", help="CLIP layers' lr = lr x this (end to end) \\[default: 0.1]."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay \\[default: 0.2]."),
    warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs", help="Linear warm-up before the cosine schedule \\[default: 5]."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16 or fp16."),
    grad_checkpointing: Optional[bool] = typer.Option(None, "--grad-checkpointing/--no-grad-checkpointing", help="Trade compute for memory (visual encoder and temporal transformer)."),
    shots: Optional[int] = typer.Option(None, "--shots", help="Few-shot: train on K videos per class (a seeded, reproducible sample)."),
    samples_per_epoch: Optional[int] = typer.Option(None, "--samples-per-epoch", help="Cycle the training set to this many samples per epoch (few-shot runs: as many steps as a full-data epoch, as the paper does)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of initialisation, data order, sampling and few-shot draw \\[default: 0]."),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate every N epochs \\[default: 1]."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes \\[default: 2]."),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="Continue from the last complete checkpoint in --out."),
) -> None:
    """Train BIKE's Video branch (Video Concept Spotting + temporal transformer, Eq. 5-7).

    Multi-GPU / multi-node: `accelerate launch --multi_gpu --num_processes N -m bike_cli train-video ...`.
    """
    options = dict(locals())
    options.pop("recipe")
    templates = options.pop("template")
    if templates is not None:
        options["templates"] = templates
    overrides = {k: v for k, v in options.items() if v is not None}
    cfg = run_guarded(build_config, TrainVideoConfig, recipe, overrides, stage="train-video")
    summary = run_guarded(run_train_video, cfg, lambda: RichProgress("steps"))
    if summary.is_main:
        print_train_summary("train-video", summary)


def print_train_summary(stage: str, summary: TrainSummary) -> None:
    """The final table of a training stage."""
    table = Table(title=f"{stage}: {summary.out}", show_header=False, title_justify="left")
    table.add_row("epochs / steps", f"{summary.epochs} / {summary.steps}")
    table.add_row("best epoch", str(summary.best_epoch))
    for key, value in summary.best_metrics.items():
        table.add_row(f"best {key}", f"{value:.2f}")
    table.add_row("last train loss", f"{summary.last_metrics.get('train_loss', float('nan')):.4f}")
    table.add_row("checkpoints", f"{summary.out / 'best.pt'}, {summary.out / 'last.pt'}")
    table.add_row("time", f"{summary.seconds:.1f} s")
    console.print(table)
