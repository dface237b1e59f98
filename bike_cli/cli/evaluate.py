"""`bike eval`: multi-view scores, fusion and metrics (a thin shell over stages.evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from bike_cli.cli.app import app, console, run_guarded
from bike_cli.cli.progress import RichProgress
from bike_cli.models.text import DEFAULT_TEMPLATE
from bike_cli.stages.evaluate import EvalConfig, EvalSummary, run_eval


@app.command("eval")
def evaluate(
    out: Path = typer.Option(..., "--out", help="Folder for video_scores.csv, attrs_scores.csv, fused_scores.csv and metrics.json."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Video-branch run folder (best.pt) or checkpoint file. Without it: zero-shot CLIP."),
    features: Optional[Path] = typer.Option(None, "--features", help="Test feature cache (its views are all scored)."),
    videos: Optional[Path] = typer.Option(None, "--videos", help="Test video list (decoded here with --views)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder that relative paths of --videos start from."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names \\[default: the checkpoint's, else the cache's]."),
    views: Optional[str] = typer.Option(None, "--views", help="CxS views, e.g. 4x3 (with --videos; with --features it must match the cache)."),
    attributes: Optional[Path] = typer.Option(None, "--attributes", help="Attributes CSV of the test videos (adds the Attributes branch)."),
    attrs_checkpoint: Optional[Path] = typer.Option(None, "--attrs-checkpoint", help="train-attrs run folder or checkpoint; without it the Attributes branch is the zero-training one."),
    fuse: Optional[float] = typer.Option(None, "--fuse", help="lambda of S = lambda*S_V + (1-lambda)*S_A, e.g. 0.6."),
    protocol: str = typer.Option("full", "--protocol", help="full, zero-shot-half (10 seeded half-class draws) or k600-splits."),
    repeats: int = typer.Option(10, "--repeats", help="Repetitions of zero-shot-half."),
    seed: int = typer.Option(0, "--seed", help="Seed of zero-shot-half."),
    model: Optional[str] = typer.Option(None, "--model", help="Zero-shot: open_clip architecture \\[default: the cache's]."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Zero-shot: tag, checkpoint file or none \\[default: the cache's]."),
    head: str = typer.Option("vcs", "--head", help="Zero-shot head: mean or vcs."),
    vcs_tokens: str = typer.Option("words", "--vcs-tokens", help="Zero-shot VCS queries: words or all."),
    template: Optional[List[str]] = typer.Option(None, "--template", help="Zero-shot class prompt(s) with {}."),
    frames: Optional[int] = typer.Option(None, "--frames", "-T", help="Frames per clip \\[default: the checkpoint's]."),
    batch_size: int = typer.Option(64, "--batch-size", help="Videos (cache) per scoring batch."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device \\[default: cuda if available]."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for PNG plots: per-class accuracy and the fusion-weight curve."),
    allow_model_mismatch: bool = typer.Option(False, "--allow-model-mismatch", help="Warn instead of refusing when the checkpoint or model is not the one that made the cache (experts only)."),
) -> None:
    """Score a test set with the Video branch (and the Attributes branch), fuse them and report metrics.

    Views are scored as softmax(scale x logits) and averaged per video.
    """
    cfg = EvalConfig(out=out, checkpoint=checkpoint, features=features, videos=videos, root=root, classes=classes,
                     views=views, attributes=attributes, attrs_checkpoint=attrs_checkpoint, fuse=fuse,
                     protocol=protocol, repeats=repeats, seed=seed, model=model, pretrained=pretrained, head=head,
                     vcs_tokens=vcs_tokens, templates=list(template) if template else [DEFAULT_TEMPLATE],
                     frames=frames, batch_size=batch_size, workers=workers, device=device, plots=plots,
                     allow_model_mismatch=allow_model_mismatch)
    print_metrics(run_guarded(run_eval, cfg, RichProgress("videos")))


def print_metrics(summary: EvalSummary) -> None:
    branches = list(summary.metrics)
    names = [k for k, v in summary.metrics[branches[0]].items() if isinstance(v, float)]
    table = Table(title=f"eval: {summary.videos} videos ({summary.metrics[branches[0]]['protocol']})",
                  title_justify="left")
    table.add_column("branch")
    for name in names:
        table.add_column(name, justify="right")
    for branch in branches:
        table.add_row(branch, *(f"{summary.metrics[branch].get(n, float('nan')):.2f}" for n in names))
    console.print(table)
    console.print(f"scores and metrics.json in {summary.out}")
    if summary.failed:
        console.print(f"[red]{len(summary.failed)} videos could not be read[/] (listed in metrics.json)")
