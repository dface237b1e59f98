"""`bike search`: text-to-video retrieval over a feature cache (a thin shell over stages.search)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bike_cli.cli import options as o
from bike_cli.cli.core import console, given, make_config, run_guarded, settings, stdout
from bike_cli.config.stages import SearchConfig

if TYPE_CHECKING:
    from bike_cli.stages.search import SearchResult


@settings(SearchConfig, model="the cache's", pretrained="the cache's",
          quick_gelu="the cache's")
def search(
    queries: list[str] | None = typer.Argument(None, help="Texts to search for, e.g. \"flipping a pancake\"."),
    features: Annotated[Path, typer.Option(
        "--features", rich_help_panel=o.INPUT, help="Feature cache (HDF5) written by extract-features.")] = ...,
    queries_file: Annotated[Path | None, o.option("--queries", "A file of queries, one a line.", o.INPUT)] = None,
    root: Annotated[Path | None, o.option(
        "--root", "Folder the cache's video ids are paths under (for the `path` column and --sheet).",
        o.INPUT)] = None,
    model: o.Model = None,
    pretrained: o.Pretrained = None,
    quick_gelu: o.QuickGelu = None,
    template: Annotated[str | None, o.option(
        "--template", "Wraps each query, {} for its text (default: the text as typed).", o.MODEL)] = None,
    class_texts: o.ClassTexts = None,
    allow_model_mismatch: o.AllowModelMismatch = None,
    rule: Annotated[str | None, o.option(
        "--rule", "vcs (Video Concept Spotting, Eq. 5-6, the query's words pick the frames) or mean "
        "(cosine of the mean-pooled video).", o.OUTPUT)] = None,
    top: Annotated[int | None, o.option("--top", "Videos reported per query.", o.OUTPUT)] = None,
    candidates: Annotated[int | None, o.option(
        "--candidates", "Videos the index pre-selects per query for the VCS rule.", o.PERFORMANCE)] = None,
    out: Path | None = o.out_option("Hits CSV (rank, video, score, salient frame), with its .meta.json sidecar."),
    sheet: Annotated[Path | None, o.option(
        "--sheet", "Draw a contact sheet (.png...): a row per query, its top videos' most salient frames.",
        o.OUTPUT)] = None,
    evaluate: Annotated[bool | None, o.option(
        "--eval", "Use the cache's class names as queries: per class AP and recall@1/5/10, both rules.",
        o.OUTPUT)] = None,
    as_json: Annotated[bool, o.option(
        "--json", "Print one JSON document to stdout instead of tables (logs stay on stderr).", o.OUTPUT)] = False,
    device: o.Device = None,
) -> None:
    """Find the videos of a feature cache that match texts, and the moment in each.

    Queries are encoded with the cache's own CLIP. A search index (mean-pooled video vectors, kept
    beside the cache as CACHE.h5.search-index.h5 and rebuilt when the cache changes) pre-selects
    --candidates videos per query with one matrix product; the VCS rule then scores those.
    """
    options = given(locals(), "as_json")
    options["queries"] = list(queries or [])
    cfg = make_config(SearchConfig, options)
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.search import run_search

    result = run_guarded(run_search, cfg, RichProgress("videos"))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        print_result(result)


def print_result(result: SearchResult) -> None:
    from rich.table import Table

    from bike_cli.cli.tables import Folded
    for query in result.queries:
        table = Table(title=f"\u201c{query.query}\u201d ({result.rule})", title_justify="left")
        for column in ("rank", "score", "video", "salient frame"):
            table.add_column(column, justify="left" if column == "video" else "right", overflow="fold")
        for hit in query.hits:
            table.add_row(str(hit.rank), f"{hit.score:.4f}", Folded(hit.video_id),
                          f"{hit.salient_frame} (t={hit.salient_step})")
        stdout.print(table)
    if result.evaluation is not None:
        stdout.print(evaluation_table(result.evaluation))
    for what, path in (("hits", result.out), *(("sheet", page) for page in result.sheets)):
        if path is not None:
            console.print(Folded(f"{what} written to {path}"))


def evaluation_table(evaluation: dict):
    from rich.table import Table

    table = Table(title=f"text-to-video retrieval: {evaluation['classes']} class names over "
                  f"{evaluation['videos']} videos (%, mean over classes)", title_justify="left")
    rules = evaluation["rules"]
    names = list(next(iter(rules.values()))["mean"])
    table.add_column("rule")
    for name in names:
        table.add_column(name, justify="right")
    for rule, values in rules.items():
        table.add_row(rule, *(f"{values['mean'][n]:.1f}" for n in names))
    return table
