"""`bike demo`: the whole pipeline on a generated dataset, with no download."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bike_cli.cli import options as o
from bike_cli.cli.core import console, given, make_config, run_guarded, settings
from bike_cli.config.stages import DemoConfig


@settings(DemoConfig)
def demo(
    out: Path | None = o.out_option("Folder for the generated videos and every stage's outputs."),
    model: o.Model = None,
    pretrained: o.Pretrained = None,
    videos_per_class: Annotated[int | None, typer.Option(
        "--videos-per-class", rich_help_panel=o.INPUT,
        help="Generated videos per class (a third go to validation).")] = None,
    frames: o.Frames = None,
    seed: o.Seed = None,
    workers: o.Workers = None,
) -> None:
    """Generate a small labelled video dataset and run bike's stages on it with the built-in tiny model.

    Stages: extract-features (train split 1x1 view, val split 2x3 views); train-video (VCS head and
    temporal transformer) validated on every view; gen-attributes with a small lexicon of shapes,
    colours and motions (and the zero-training S_A scores); train-attrs; eval of both branches with
    fusion; predict with an explain image; search the val cache for one text (its top 3). Re-running reuses what is already there.
    """
    cfg = make_config(DemoConfig, given(locals()))
    from rich.table import Table

    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.demo import run_demo

    summary = run_guarded(run_demo, cfg, lambda: RichProgress("videos"))
    from bike_cli.cli.tables import Folded, title

    table = Table(title=title(f"bike demo: {summary.out}"), title_justify="left")
    for column in ("stage", "videos", "result", "output", "seconds"):
        table.add_column(column, overflow="fold")
    for step in summary.steps:
        table.add_row(step.name, str(step.videos or ""), step.result, Folded(step.output),
                      f"{step.seconds:.1f}" if step.seconds >= 10 else f"{step.seconds:.2f}")
    console.print(table)
    result = Table(title="top-1 on the held-out videos (2x3 views)", title_justify="left")
    for column in ("Video branch", "Attributes branch", "fused (0.6)", "chance"):
        result.add_column(column, justify="right", overflow="fold")
    result.add_row(*(f"{v:.1f} %" for v in (summary.video_top1, summary.attrs_top1, summary.fused_top1, summary.chance)))
    console.print(result)
    if summary.search:
        console.print("search: " + "  ".join(f"{rank}. {video} ({score:.3f})"
                                             for rank, (video, score) in enumerate(summary.search, 1)), highlight=False)
    console.print(Folded(f"files: {summary.out} (results/metrics.json, results/explain.png); classes in "
                         f"{summary.classes}"))
