"""`bike fuse`: score CSVs -> fused score CSV + metrics JSON (a thin shell over stages.fuse)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bike_cli.cli import options as o
from bike_cli.cli.core import console, given, make_config, run_guarded, settings
from bike_cli.cli.tables import Folded, add_columns, metric_cells
from bike_cli.config.stages import FuseConfig, parse_weights

if TYPE_CHECKING:
    from bike_cli.stages.fuse import FuseSummary

GRID_ROWS_SHOWN = 25  # a longer grid is shown as its best rows



@settings(FuseConfig, weights="equal weights", repeats="10", seed="0",
          splits="k600_split1,k600_split2,k600_split3")
def fuse(
    inputs: list[Path] = typer.Argument(..., help="Score CSVs to fuse (two or more, e.g. Video then Attributes "
                                        "branch): the same videos (any row order) and the same classes (columns "
                                        "are matched by class name)."),
    out: Path = o.out_option("Fused score CSV to write; its metrics go to OUT stem + .metrics.json beside it.",
                             required=True),
    weights: Annotated[str | None, o.option(
        "--weights", "One weight per input, comma-separated, summing to 1: '0.6,0.4' is Eq. 4 with lambda 0.6.",
        o.MODEL)] = None,
    search: Annotated[bool | None, o.option(
        "--search", "Choose the weights on --val files: the best top-1 (mAP for multi-label files) over a grid.",
        o.MODEL)] = None,
    val: Annotated[list[Path] | None, o.option(
        "--val", "Validation score CSV for --search, one per input in the same order: repeat the option "
        "(--val A_val.csv --val B_val.csv).", o.INPUT)] = None,
    grid_step: Annotated[float | None, o.option(
        "--grid-step", "Step of the --search grid over the weights (must divide 1).", o.MODEL)] = None,
    protocol: Annotated[str | None, o.option(
        "--protocol", "Evaluation protocol of the inputs and the result: full, zero-shot-half or k600-splits.", o.OUTPUT)] = None,
    repeats: Annotated[int | None, o.option("--repeats", "zero-shot-half: random halves of the classes.",
                                           o.OUTPUT)] = None,
    seed: o.Seed = None,
    splits: Annotated[str | None, o.option(
        "--splits", "k600-splits: comma-separated class lists (lexicon names or files).", o.OUTPUT)] = None,
    compat: o.Compat = None,
) -> None:
    """Fuse branch scores linearly, S = sum_i w_i S_i (the paper's Eq. 4: lambda S_V + (1 - lambda) S_A).

    Scores are added as they are (no softmax): give all inputs on the same scale, e.g. the softmax
    probabilities the Video branch writes. Metrics of each input and of the result are printed and
    written to the metrics JSON.
    """
    options = {"repeats": repeats, "seed": seed, "splits": splits.split(",") if splits else None}
    cfg = make_config(FuseConfig, {
        "inputs": list(inputs), "out": out, "weights": run_guarded(parse_weights, weights) if weights is not None
        else None, "val": list(val or []), "protocol_options": given(options),
        **given({"search": search, "grid_step": grid_step, "protocol": protocol, "compat": compat}),
    })
    from bike_cli.stages.fuse import run_fuse

    summary = run_guarded(run_fuse, cfg)
    if summary.grid is not None:
        print_grid(summary)
    print_metrics(summary)


def print_grid(summary: FuseSummary) -> None:
    from rich.table import Table

    key = summary.criterion or "score"
    best = summary.best
    rows = summary.grid
    title = f"weight search on the validation files ({key}, %)"
    if len(rows) > GRID_ROWS_SHOWN:
        rows = sorted(rows, key=lambda p: (math.isnan(p.score), -p.score))[:10]
        title += f": the best 10 of {len(summary.grid)} (all in the metrics JSON)"
    table = Table(title=title, title_justify="left")
    add_columns(table, [*(f"w {path.name}" for path in summary.inputs), key])
    for point in rows:
        style = "bold green" if point == best else None
        table.add_row(*(f"{w:.2f}" for w in point.weights), f"{point.score:.2f}", style=style)
    console.print(table)
    if summary.grid_tied:
        console.print(f"every point of the grid ties at {best.score:.2f}: the validation files cannot choose, so "
                      f"the default weights {', '.join(f'{w:g}' for w in best.weights)} are kept", highlight=False)


def print_metrics(summary: FuseSummary) -> None:
    from rich.table import Table

    fused = metric_cells(summary.fused_metrics)
    table = Table(title=f"fuse: {summary.videos} videos, {summary.classes} classes "
                  f"(protocol {summary.fused_metrics['protocol']}, %)", title_justify="left")
    add_columns(table, ["scores"], justify="left")
    add_columns(table, ["weight", *fused])
    for path, weight, metrics in zip(summary.inputs, summary.weights, summary.input_metrics):
        cells = metric_cells(metrics)
        table.add_row(Folded(path), f"{weight:.2f}", *(cells.get(k, "") for k in fused))
    table.add_row("fused", "1.00", *fused.values(), style="bold")
    console.print(table)
    console.print(f"wrote {summary.out} and {summary.metrics_json}", highlight=False)
