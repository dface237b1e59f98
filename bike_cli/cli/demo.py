"""`bike demo`: the whole pipeline on a generated dataset, with no download."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from bike_cli.cli.app import app, console, run_guarded
from bike_cli.cli.progress import RichProgress
from bike_cli.stages.demo import DemoConfig, run_demo


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("bike-demo"), "--out", help="Folder for the generated videos and every stage's outputs."),
    model: str = typer.Option("bike-tiny", "--model", help="open_clip architecture (bike-tiny needs no download)."),
    pretrained: str = typer.Option("none", "--pretrained", help="Pretrained tag, checkpoint file, or none."),
    videos_per_class: int = typer.Option(12, "--videos-per-class", help="Generated videos per class (a third go to validation)."),
    frames: int = typer.Option(8, "--frames", "-T", help="Frames per clip."),
    workers: int = typer.Option(2, "--workers", help="Decoding worker processes."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated dataset."),
) -> None:
    """Generate a small labelled video dataset and run bike's stages on it with the built-in tiny model.

    Stages: extract-features (train split 1x1 view, val split 2x3 views); train-video (VCS head and
    temporal transformer) validated on every view; gen-attributes with a small lexicon of shapes,
    colours and motions (and the zero-training S_A scores); train-attrs; eval of both branches with
    fusion; predict with an explain image. Re-running reuses what is already there.
    """
    cfg = DemoConfig(out=out, model=model, pretrained=pretrained, videos_per_class=videos_per_class,
                     frames=frames, seed=seed, workers=workers)
    summary = run_guarded(run_demo, cfg, lambda: RichProgress("videos"))
    table = Table(title=f"bike demo: {summary.out}", title_justify="left")
    for column in ("stage", "videos", "result", "output", "seconds"):
        table.add_column(column)
    for step in summary.steps:
        table.add_row(step.name, str(step.videos or ""), step.result, str(step.output), f"{step.seconds:.1f}")
    console.print(table)
    result = Table(title="top-1 on the held-out videos (2x3 views)", title_justify="left")
    for column in ("Video branch", "Attributes branch", "fused (0.6)", "chance"):
        result.add_column(column, justify="right")
    result.add_row(*(f"{v:.1f} %" for v in (summary.video_top1, summary.attrs_top1, summary.fused_top1, summary.chance)))
    console.print(result)
    console.print(f"files: {summary.out} (results/metrics.json, results/explain.png); classes in {summary.classes}")
