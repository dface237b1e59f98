"""`bike train-video`: train the Video branch (a thin shell over stages.train_video)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from bike_cli.cli import options as o
from bike_cli.cli.core import console, given, make_config, run_guarded, settings
from bike_cli.cli.tables import Folded, add_columns, title
from bike_cli.config.stages import TrainVideoConfig

if TYPE_CHECKING:
    from bike_cli.engine.run_folder import TrainSummary



@o.with_options(o.TRAINING_BLOCK)
@settings(TrainVideoConfig, model="with --features: the cache's model",
          pretrained="with --features: the cache's weights", classes="those recorded in the cache",
          vcs_tokens="words; all with an authors' --init-from under --compat authors")
def train_video(
    features: Annotated[Path | None, o.option(
        "--features", "Training feature cache from extract-features (CLIP frozen: trains the temporal head and "
        "logit scale).", o.INPUT)] = None,
    videos: Annotated[Path | None, o.option(
        "--videos", "Training video list (end to end: CLIP's visual encoder is fine-tuned too).", o.INPUT)] = None,
    root: o.Root = None,
    classes: o.Classes = None,
    base_classes: o.BaseClasses = None,
    val_features: Annotated[Path | None, o.option(
        "--val-features", "Validation feature cache (all its views are scored).", o.INPUT)] = None,
    val_videos: Annotated[Path | None, o.option(
        "--val-videos", "Validation video list (end-to-end mode).", o.INPUT)] = None,
    val_root: Annotated[Path | None, o.option(
        "--val-root", "Folder that relative paths of --val-videos start from.", o.INPUT)] = None,
    recipe: o.Recipe = None,
    model: o.Model = None,
    pretrained: o.Pretrained = None,
    quick_gelu: o.QuickGelu = None,
    init_from: Annotated[Path | None, o.option(
        "--init-from", "Start from a trained Video branch: a bike run folder or checkpoint, or the authors' "
        "released BIKE checkpoint.", o.MODEL)] = None,
    ignore_visual_weights: o.IgnoreVisualWeights = None,
    allow_model_mismatch: o.AllowModelMismatch = None,
    head: o.Head = None,
    temporal: Annotated[str | None, o.option(
        "--temporal", "none or transformer (a temporal transformer before the head).", o.MODEL)] = None,
    temporal_layers: Annotated[int | None, o.option(
        "--temporal-layers", "Layers of the temporal transformer.", o.MODEL)] = None,
    vcs_tokens: o.VcsTokens = None,
    tau: Annotated[float | None, o.option("--tau", "VCS softmax temperature.", o.MODEL)] = None,
    templates: o.Templates = None,
    class_texts: o.ClassTexts = None,
    frames: o.Frames = None,
    shots: Annotated[int | None, o.option(
        "--shots", "Few-shot: train on K videos per class (a seeded, reproducible sample).", o.TRAINING)] = None,
    shots_list: Annotated[Path | None, o.option(
        "--shots-list", "Few-shot: train on exactly the videos of a published K-shot list (ViFi-CLIP's "
        "train1_few_shot_K.txt, or any video list); videos matched by id, else file stem; its labels unused.",
        o.TRAINING)] = None,
    samples_per_epoch: Annotated[int | None, o.option(
        "--samples-per-epoch", "Cycle the training set to this many samples per epoch (few-shot runs: as many "
        "steps as a full-data epoch, as the paper does).", o.TRAINING)] = None,
    average_last: Annotated[int | None, o.option(
        "--average-last", "Also write averaged.pt in --out: the mean of the weights of the last N epochs (SWA, "
        "FROSTER); an ordinary checkpoint for eval and predict.", o.TRAINING)] = None,
    out: Path | None = o.out_option("Run folder: config.yaml, metrics.jsonl, best.pt, last.pt, checkpoints/."),
    grad_checkpointing: Annotated[bool | None, o.option(
        "--grad-checkpointing/--no-grad-checkpointing",
        "Trade compute for memory (visual encoder and temporal transformer).", o.PERFORMANCE)] = None,
    cache_in_memory: Annotated[str | None, o.option(
        "--cache-in-memory", "With --features: hold the training rows in memory (RAM, or GPU memory on CUDA) and "
        "batch by indexing, no workers: auto (when under half the free memory), on or off.", o.PERFORMANCE)] = None,
    **training: object,  # o.TRAINING_BLOCK
) -> None:
    """Train BIKE's Video branch (Video Concept Spotting + temporal transformer, Eq. 5-7).

    Multi-GPU / multi-node: `accelerate launch --multi_gpu --num_processes N -m bike_cli train-video ...`.
    """
    params = {**locals(), **training}
    cfg = make_config(TrainVideoConfig, given(params, "recipe", "training"), recipe, "train-video", params)
    from bike_cli.stages.train_video import run_train_video

    run_training_command("train-video", cfg, run_train_video)


def run_training_command(stage: str, cfg: object, run: Callable[..., TrainSummary]) -> None:
    """What `train-video` and `train-attrs` do with their settings (`make_config`: the recipe, then the
    options given): the stage `run` with a progress bar of steps, the summary table (the main process only)."""
    from bike_cli.cli.progress import RichProgress

    summary = run_guarded(run, cfg, lambda: RichProgress("steps"))
    if summary.is_main:
        print_train_summary(stage, summary)


def print_train_summary(stage: str, summary: TrainSummary) -> None:
    """The final table of a training stage (or the line saying the run had finished before)."""
    from rich.table import Table

    if summary.finished_before:
        console.print(Folded(f"{stage}: the run in {summary.out} finished all {summary.epochs} epochs before; "
                             "nothing to do (raise --epochs to train on, or --overwrite to start over)"))
    table = Table(title=title(f"{stage}: {summary.out}"), show_header=False, title_justify="left")
    add_columns(table, ["", ""], justify="left")  # paths fold instead of ending in "…"
    table.add_row("epochs / steps", f"{summary.epochs} / {summary.steps}")
    table.add_row("best epoch", str(summary.best_epoch))
    for key, value in summary.best_metrics.items():
        table.add_row(f"best {key}", f"{value:.2f}")
    if "train_loss" in summary.last_metrics:
        table.add_row("last train loss", f"{summary.last_metrics['train_loss']:.4f}")
    table.add_row("checkpoints", Folded(f"{summary.out / 'best.pt'}, {summary.out / 'last.pt'}"))
    if not summary.finished_before:
        table.add_row("time", f"{summary.seconds:.1f} s")
    console.print(table)
