"""`bike extract-features`: videos -> HDF5 frame-feature cache (a thin shell over stages.extract)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bike_cli.cli.app import app, console, run_guarded
from bike_cli.cli.progress import RichProgress
from bike_cli.stages.extract import ExtractConfig, ExtractSummary, run_extraction


@app.command("extract-features")
def extract_features(
    list_path: Path = typer.Option(..., "--list", help="Video list: `relpath label` text, CSV with path,label, or the official Kinetics CSV."),
    out: Path = typer.Option(..., "--out", help="Feature cache to write (HDF5, .h5). Re-running resumes it."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder that relative paths in the list start from \\[default: the list's folder]."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names: `id,name` CSV or one name per line. Needed when labels are class names."),
    model: str = typer.Option("bike-tiny", "--model", help="open_clip architecture, e.g. ViT-B-16, or bike-tiny (built in, for tests and the demo)."),
    pretrained: str = typer.Option("none", "--pretrained", help="Pretrained tag (e.g. openai), a local checkpoint file (.pt state dict, .safetensors, OpenAI TorchScript), or none (random init)."),
    quick_gelu: Optional[bool] = typer.Option(None, "--quick-gelu/--no-quick-gelu", help="Force QuickGELU on or off \\[default: on for OpenAI weights (tag openai, TorchScript archives) and -quickgelu names]."),
    frames: int = typer.Option(8, "--frames", "-T", help="Frames per clip (TSN segments)."),
    views: str = typer.Option("1x1", "--views", help="CxS: C temporal clips x S spatial crops (S = 1 centre or 3 left/centre/right), e.g. 4x3."),
    sampling: str = typer.Option("test", "--sampling", help="test: segment centres (deterministic); train: a random frame per segment, seeded per video."),
    seed: int = typer.Option(0, "--seed", help="Seed of train-mode sampling."),
    failures: Optional[Path] = typer.Option(None, "--failures", help="CSV of videos that could not be read, with the reason \\[default: OUT stem + .failures.csv]."),
    decoder: str = typer.Option("pyav", "--decoder", help="Video decoder: pyav (decodes only what the sampled frames need, exactly) or decord. The other one is tried on files the first cannot read."),
    batch_size: int = typer.Option(16, "--batch-size", help="Videos per batch: each batch is decoded in parallel, encoded together and written as one unit."),
    workers: int = typer.Option(2, "--workers", help="DataLoader worker processes that decode videos (0 = decode in the main process)."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device \\[default: this process's GPU, else cpu]."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16/fp16 autocast on GPU, fp32 on CPU), fp32, bf16 or fp16."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 when any video could not be read."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an existing cache (and unfinished parts) instead of resuming."),
) -> None:
    """Decode T frames x C*S views of every video and store their CLIP image embeddings [N, V, T, D].

    Finished videos are skipped when the command is run again; unreadable videos are listed in the
    failures CSV. Several processes: `accelerate launch --num_processes N -m bike_cli extract-features ...`.
    """
    cfg = ExtractConfig(
        list_path=list_path, out=out, model=model, pretrained=pretrained, root=root, classes=classes,
        frames=frames, views=views, sampling=sampling, seed=seed, failures=failures, decoder=decoder,
        batch_size=batch_size, workers=workers, strict=strict, overwrite=overwrite,
        quick_gelu=quick_gelu, device=device, precision=precision,
    )
    summary = run_guarded(run_extraction, cfg, RichProgress("videos"))
    if not summary.is_main:  # the other processes of a distributed run: rank 0 reports
        return
    print_summary(summary)
    if strict and summary.failed:
        raise typer.Exit(code=1)


def print_summary(summary: ExtractSummary) -> None:
    table = Table(title="extract-features", show_header=False, title_justify="left")
    table.add_row("videos in list", str(summary.videos_in_list))
    table.add_row("already cached", str(summary.already_done))
    table.add_row("extracted now", str(summary.extracted))
    table.add_row("failed", f"[red]{summary.failed}[/]" if summary.failed else "0")
    table.add_row("cache", f"{summary.cache} ({summary.cached} videos)")
    table.add_row("failures", str(summary.failures_csv))
    table.add_row("time", f"{summary.seconds:.1f} s")
    console.print(table)
    for failure in summary.failures[:5]:
        console.print(f"  [red]failed[/] {failure.video_id}: {failure.reason}", highlight=False)
    if summary.failed > 5:
        console.print(f"  ... {summary.failed - 5} more in {summary.failures_csv}")
