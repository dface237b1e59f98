"""`bike extract-features`: videos -> HDF5 frame-feature cache (a thin shell over stages.extract)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bike_cli.cli import options as o
from bike_cli.cli.core import EXIT_USAGE, console, fail, given, make_config, run_guarded, settings
from bike_cli.cli.tables import Folded, add_columns
from bike_cli.config.stages import ExtractConfig

if TYPE_CHECKING:
    from bike_cli.stages.extract import ExtractSummary

MODEL_NEEDED = ("extract-features needs --model: an open_clip architecture with its weights, e.g. "
                "--model ViT-B-16 --pretrained openai, or --model bike-tiny (built in, random weights: tests only)")


@settings(ExtractConfig, model=None, root="the list's folder",
          failures="OUT stem + .failures.csv")
def extract_features(
    list_path: Annotated[Path, typer.Option(
        "--list", rich_help_panel=o.INPUT,
        help="Video list: `relpath label` text, CSV with path,label, or the official Kinetics CSV.")],
    out: Path = o.out_option("Feature cache to write (HDF5, .h5). Re-running resumes it.", required=True),
    root: o.Root = None,
    classes: o.Classes = None,
    model: o.Model = None,
    pretrained: o.Pretrained = None,
    quick_gelu: o.QuickGelu = None,
    frames: o.Frames = None,
    views: o.Views = None,
    sampling: Annotated[str | None, typer.Option(
        "--sampling", rich_help_panel=o.SAMPLING,
        help="test: segment centres (deterministic); train: a random frame per segment, seeded per video.")] = None,
    seed: o.Seed = None,
    decoder: o.Decoder = None,
    failures: Annotated[Path | None, typer.Option(
        "--failures", rich_help_panel=o.OUTPUT, help="CSV of the videos that could not be read, with the reason.")] = None,
    strict: Annotated[bool | None, typer.Option(
        "--strict", rich_help_panel=o.OUTPUT, help="Exit with code 1 when any video could not be read.")] = None,
    overwrite: o.Overwrite = None,
    batch_size: o.BatchSize = None,
    workers: o.Workers = None,
    device: o.Device = None,
    precision: o.Precision = None,
    compat: o.Compat = None,
) -> None:
    """Decode T frames x C*S views of every video and store their CLIP image embeddings [N, V, T, D].

    Finished videos are skipped when the command is run again; unreadable videos are listed in the
    failures CSV. Several processes: `accelerate launch --num_processes N -m bike_cli extract-features ...`.
    """
    options = given(locals())
    if model is None:
        fail(MODEL_NEEDED, EXIT_USAGE)
    cfg = make_config(ExtractConfig, options)
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.extract import run_extraction

    summary = run_guarded(run_extraction, cfg, RichProgress("videos"))
    if not summary.is_main:  # the other processes of a distributed run: rank 0 reports
        return
    print_summary(summary)
    if cfg.strict and summary.failed:
        fail(f"--strict: {summary.failed} of {summary.videos_in_list} videos could not be read (listed in "
             f"{summary.failures_csv}); {summary.cache} holds the {summary.cached} that could")


def print_summary(summary: ExtractSummary) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="extract-features", show_header=False, title_justify="left")
    add_columns(table, ["", ""], justify="left")  # paths fold instead of ending in "…"
    table.add_row("videos in list", str(summary.videos_in_list))
    table.add_row("already cached", str(summary.already_done))
    table.add_row("extracted now", str(summary.extracted))
    table.add_row("failed", Text(str(summary.failed), style="red" if summary.failed else ""))
    table.add_row("cache", Folded(f"{summary.cache} ({summary.cached} videos)"))
    table.add_row("failures", Folded(summary.failures_csv))
    table.add_row("time", f"{summary.seconds:.1f} s")
    console.print(table)
    for failure in summary.failures[:5]:
        console.print(" ", Text("failed", style="red"), f"{failure.video_id}: {failure.reason}", highlight=False)
    if summary.failed > 5:
        console.print(f"  ... {summary.failed - 5} more in {summary.failures_csv}")
