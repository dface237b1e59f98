"""What the commands print: their Rich tables, metric cells, columns that fold instead of cutting, and
`Folded` text that breaks a path between its folders at any width (80 columns included)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text

from bike_cli.cli.core import console, stdout, visible

if TYPE_CHECKING:
    from rich.table import Table

    from bike_cli.engine.run_folder import TrainSummary
    from bike_cli.stages.demo import DemoSummary
    from bike_cli.stages.evaluate import EvalSummary
    from bike_cli.stages.extract import ExtractSummary
    from bike_cli.stages.fuse import FuseSummary
    from bike_cli.stages.gen_attributes import GenAttributesSummary
    from bike_cli.stages.predict import PredictResult
    from bike_cli.stages.search import SearchResult

GRID_ROWS_SHOWN = 25  # fuse: a longer grid is shown as its best rows
SPARKS = "▁▂▃▄▅▆▇█"


def metric_cells(result: dict) -> dict[str, str]:
    """Printable metrics of a protocol result: `X_mean` and `X_std` become one `X` cell 'mean ± std'."""
    from bike_cli.eval.protocols import headline_metrics

    values = headline_metrics(result)
    cells = {}
    for key, value in values.items():
        if key.endswith("_std") and key[:-4] + "_mean" in values:
            continue
        if key.endswith("_mean") and key[:-5] + "_std" in values:
            cells[key[:-5]] = f"{value:.2f} ± {values[key[:-5] + '_std']:.2f}"
        else:
            cells[key] = f"{value:.2f}"
    return cells


def add_columns(table: Any, names: list[str], justify: str = "right") -> None:
    """Columns whose long headers and values wrap onto more lines rather than end in '…' at 80 columns."""
    for name in names:
        table.add_column(name.replace("_", " "), justify=justify, overflow="fold")


class Folded:
    """Text for a table cell or title that wraps at spaces and after path separators, so that a path breaks
    between its folders, not wherever the column ends as Rich's folding does (`train_video_ru` / `n/best.pt`);
    only a name wider than the whole column folds. User text: its controls are shown (`core.visible`)."""

    def __init__(self, text: object, style: str = "") -> None:
        self.text, self.style = visible(str(text)), style

    def _pieces(self) -> list[str]:
        """The text cut after each `/` (or `\\`) and each run of spaces: where a line may end."""
        return [piece for piece in re.split(r"(?<=[/\\])(?![/\\])|(?<=\s)(?=\S)", self.text) if piece]

    def lines(self, width: int) -> list[str]:
        """The text packed into lines of at most `width` cells, cut only between pieces."""
        lines, line = [], ""
        for piece in self._pieces():
            if line and cell_len((line + piece).rstrip()) > width:
                lines.append(line.rstrip())
                line = piece
            else:
                line += piece
        return [*lines, line.rstrip()]

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        pieces = [cell_len(piece.rstrip()) for piece in self._pieces()] or [0]
        return Measurement(max(pieces), cell_len(self.text)).with_maximum(options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("\n".join(self.lines(options.max_width)), style=self.style, overflow="fold",
                   justify=options.justify or "left")


def title(text: object) -> Folded:
    """A table title that may hold a path: styled as Rich's titles, folded as `Folded`."""
    return Folded(text, style="table.title")


def _table(heading: object, **options: Any) -> Table:
    """A Rich table titled on the left (rich.table is imported here, on first use: not at start-up)."""
    from rich.table import Table

    return Table(title=heading, title_justify="left", **options)


def _facts(heading: object) -> Table:
    """A two-column table of names and values, without a header."""
    table = _table(heading, show_header=False)
    add_columns(table, ["", ""], justify="left")  # paths fold instead of ending in "…"
    return table


def print_extract(summary: ExtractSummary) -> None:
    table = _facts("extract-features")
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


def print_gen_attributes(summary: GenAttributesSummary) -> None:
    table = _facts("gen-attributes")
    table.add_row("videos", f"{summary.videos} ({summary.rows} rows)")
    table.add_row("lexicon", f"{summary.phrases} phrases, top {summary.top_k}")
    reuse = "reused" if summary.phrase_cache_reused else "computed"
    table.add_row("phrase embeddings", Folded(f"{summary.phrase_cache} ({reuse})"))
    if summary.own_class_phrases:
        table.add_row("own class dropped", f"{summary.own_class_phrases} class names are phrases")
    table.add_row("attributes", Folded(summary.out))
    if summary.scores_csv is not None:
        table.add_row("S_A scores", Folded(summary.scores_csv))
    for name, value in summary.metrics.items():
        table.add_row(f"S_A {name}", f"{value:.2f} %")
    total = summary.seconds.get("total", 0.0)
    per_video = 1000 * total / summary.videos if summary.videos else 0.0
    table.add_row("time", f"{total:.1f} s ({per_video:.3f} ms per video)")
    console.print(table)


def print_train_summary(stage: str, summary: TrainSummary) -> None:
    """The final table of a training stage (or the line saying the run had finished before)."""
    if summary.finished_before:
        console.print(Folded(f"{stage}: the run in {summary.out} finished all {summary.epochs} epochs before; "
                             "nothing to do (raise --epochs to train on, or --overwrite to start over)"))
    table = _facts(title(f"{stage}: {summary.out}"))
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


def print_eval(summary: EvalSummary) -> None:
    branches = list(summary.metrics)
    cells = {branch: metric_cells(summary.metrics[branch]) for branch in branches}
    names = list(cells[branches[0]])
    table = _table(f"eval: {summary.videos} videos ({summary.metrics[branches[0]]['protocol']}, %)")
    add_columns(table, ["branch"], justify="left")
    add_columns(table, names)
    for branch in branches:
        table.add_row(branch, *(cells[branch].get(n, "") for n in names))
        if summary.metrics[branch]["protocol"] == "splits":  # each split's figures under the branch's mean ± std
            for split in summary.metrics[branch]["splits"]:
                split_cells = metric_cells(split)
                table.add_row(f"  {Path(split['split']).name}", *(split_cells.get(n, "") for n in names))
    console.print(table)
    console.print(Folded(f"scores and metrics.json in {summary.out}"))
    if summary.failed:
        console.print(Text(f"{len(summary.failed)} videos could not be read", style="red"), "(listed in metrics.json)")


def _print_grid(summary: FuseSummary) -> None:
    key = summary.criterion or "score"
    best = summary.best
    rows = summary.grid
    heading = f"weight search on the validation files ({key}, %)"
    if len(rows) > GRID_ROWS_SHOWN:
        rows = sorted(rows, key=lambda p: (math.isnan(p.score), -p.score))[:10]
        heading += f": the best 10 of {len(summary.grid)} (all in the metrics JSON)"
    table = _table(heading)
    add_columns(table, [*(f"w {path.name}" for path in summary.inputs), key])
    for point in rows:
        style = "bold green" if point == best else None
        table.add_row(*(f"{w:.2f}" for w in point.weights), f"{point.score:.2f}", style=style)
    console.print(table)
    if summary.grid_tied:
        console.print(f"every point of the grid ties at {best.score:.2f}: the validation files cannot choose, so "
                      f"the default weights {', '.join(f'{w:g}' for w in best.weights)} are kept", highlight=False)


def print_fuse(summary: FuseSummary) -> None:
    if summary.grid is not None:
        _print_grid(summary)
    fused = metric_cells(summary.fused_metrics)
    table = _table(f"fuse: {summary.videos} videos, {summary.classes} classes "
                   f"(protocol {summary.fused_metrics['protocol']}, %)")
    add_columns(table, ["scores"], justify="left")
    add_columns(table, ["weight", *fused])
    for path, weight, metrics in zip(summary.inputs, summary.weights, summary.input_metrics):
        cells = metric_cells(metrics)
        table.add_row(Folded(path), f"{weight:.2f}", *(cells.get(k, "") for k in fused))
    table.add_row("fused", "1.00", *fused.values(), style="bold")
    console.print(table)
    console.print(f"wrote {summary.out} and {summary.metrics_json}", highlight=False)


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled to the largest."""
    peak = max(values) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v / peak * (len(SPARKS) - 1) + 0.5))] for v in values)


def print_predict(result: PredictResult) -> None:
    for p in result.predictions:
        table = _table(title(p.video), show_header=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for rank, (name, prob) in enumerate(p.top, 1):
            table.add_row(f"{rank}. {name}", f"{prob:7.2%}  {'█' * round(prob * 20)}")
        method = "VCS" if p.saliency_method == "vcs" else "uniform: mean head"
        numbers = " ".join(f"{s:.2f}" for s in p.saliency)
        table.add_row(f"saliency ({method})", f"{sparkline(p.saliency)}  {numbers}")
        table.add_row("frames", " ".join(map(str, p.frame_indices)))
        if p.attributes:
            table.add_row("attributes", ", ".join(p.attributes))
            table.add_row("sentence", p.sentence or "")
        stdout.print(table)
    for video, reason in result.skipped:
        console.print(Text("skipped", style="yellow"), f"{video}: {reason}", highlight=False)


def print_search(result: SearchResult) -> None:
    for query in result.queries:
        table = _table(f"\u201c{query.query}\u201d ({result.rule})")
        for column in ("rank", "score", "video", "salient frame"):
            table.add_column(column, justify="left" if column == "video" else "right", overflow="fold")
        for hit in query.hits:
            table.add_row(str(hit.rank), f"{hit.score:.4f}", Folded(hit.video_id),
                          f"{hit.salient_frame} (t={hit.salient_step})")
        stdout.print(table)
    evaluation = result.evaluation
    if evaluation is not None:
        table = _table(f"text-to-video retrieval: {evaluation['classes']} class names over "
                       f"{evaluation['videos']} videos (%, mean over classes)")
        names = list(next(iter(evaluation["rules"].values()))["mean"])
        table.add_column("rule")
        for name in names:
            table.add_column(name, justify="right")
        for rule, values in evaluation["rules"].items():
            table.add_row(rule, *(f"{values['mean'][n]:.1f}" for n in names))
        stdout.print(table)
    for what, path in (("hits", result.out), *(("sheet", page) for page in result.sheets)):
        if path is not None:
            console.print(Folded(f"{what} written to {path}"))


def print_demo(summary: DemoSummary) -> None:
    table = _table(title(f"bike demo: {summary.out}"))
    add_columns(table, ["stage", "videos", "result", "output", "seconds"], justify="left")
    for step in summary.steps:
        table.add_row(step.name, str(step.videos or ""), step.result, Folded(step.output),
                      f"{step.seconds:.1f}" if step.seconds >= 10 else f"{step.seconds:.2f}")
    console.print(table)
    result = _table("top-1 on the held-out videos (2x3 views)")
    add_columns(result, ["Video branch", "Attributes branch", "fused (0.6)", "chance"])
    top1 = (summary.video_top1, summary.attrs_top1, summary.fused_top1, summary.chance)
    result.add_row(*(f"{v:.1f} %" for v in top1))
    console.print(result)
    if summary.search:
        console.print("search: " + "  ".join(f"{rank}. {video} ({score:.3f})"
                                             for rank, (video, score) in enumerate(summary.search, 1)), highlight=False)
    console.print(Folded(f"files: {summary.out} (results/metrics.json, results/explain.png); classes in "
                         f"{summary.classes}"))
