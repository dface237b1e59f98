"""`bike gen-attributes`: feature cache + lexicon -> attributes CSV (and S_A scores), a thin shell over
stages.gen_attributes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bike_cli.cli import options as o
from bike_cli.cli.core import console, given, make_config, run_guarded, settings
from bike_cli.cli.tables import Folded, add_columns
from bike_cli.config.stages import GenAttributesConfig

if TYPE_CHECKING:
    from bike_cli.stages.gen_attributes import GenAttributesSummary


def _text(flag: str, help: str, panel: str = o.MODEL) -> typer.models.OptionInfo:
    return o.option(flag, help, panel)


@settings(GenAttributesConfig, model="the cache's", pretrained="the cache's",
          quick_gelu="as the cache was made", classes="those recorded in the cache",
          phrase_cache="OUT stem + .phrases.pt")
def gen_attributes(
    features: Annotated[Path, typer.Option(
        "--features", rich_help_panel=o.INPUT, help="Feature cache (HDF5) written by extract-features.")],
    lexicon: Annotated[str, typer.Option(
        "--lexicon", rich_help_panel=o.INPUT, help=o.LEXICON_HELP)],
    out: Path = o.out_option("Attributes CSV to write.", required=True),
    classes: o.Classes = None,
    top_k: o.TopK = None,
    model: o.Model = None,
    pretrained: o.Pretrained = None,
    quick_gelu: o.QuickGelu = None,
    prompt: Annotated[str | None, _text(
        "--prompt", "Template each phrase is put in before encoding; '{}' = the bare phrase, as in the paper.")] = None,
    sentence_template: Annotated[str | None, _text(
        "--sentence-template", "Attribute sentence; '{}' receives the attributes.")] = None,
    separator: Annotated[str | None, _text(
        "--separator", "Joins the attributes in the sentence (',' as in the authors' code).")] = None,
    class_prompt: Annotated[str | None, _text("--class-prompt", "Prompt of the class names for --scores.")] = None,
    drop_own_class: Annotated[bool | None, _text(
        "--drop-own-class", "Never choose a video's own class name as its attribute (ablation).")] = None,
    per_view: Annotated[bool | None, _text(
        "--per-view", "One row per video and view instead of one per video (views mean-pooled).", o.OUTPUT)] = None,
    scores: Annotated[Path | None, _text(
        "--scores", "Also write S_A, the zero-training Attributes recognition scores, to this CSV.", o.OUTPUT)] = None,
    phrase_cache: Annotated[Path | None, _text(
        "--phrase-cache", "File of the phrase embeddings, reused while model, prompt and lexicon match.",
        o.OUTPUT)] = None,
    chunk_size: Annotated[int | None, _text(
        "--chunk-size", "Rows (videos, or video views) per similarity product.", o.PERFORMANCE)] = None,
    max_elements: Annotated[int | None, _text(
        "--max-elements", "Most entries in one block of similarities or of features read: bounds memory "
        "(peak about 6 bytes per entry).", o.PERFORMANCE)] = None,
    text_batch_size: Annotated[int | None, _text(
        "--text-batch-size", "Phrases and sentences per text-encoder call.", o.PERFORMANCE)] = None,
    device: o.Device = None,
    allow_model_mismatch: o.AllowModelMismatch = None,
) -> None:
    """Associate each video of a feature cache with its top-k lexicon phrases (BIKE's attributes).

    Writes video_id, label, attr_1..k, score_1..k and the attribute sentence per video; with
    --scores also the Attributes-branch recognition scores S_A, which need no training.
    """
    cfg = make_config(GenAttributesConfig, given(locals()))
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.gen_attributes import run_gen_attributes

    print_summary(run_guarded(run_gen_attributes, cfg, RichProgress("videos")))


def print_summary(summary: GenAttributesSummary) -> None:
    from rich.table import Table

    table = Table(title="gen-attributes", show_header=False, title_justify="left")
    add_columns(table, ["", ""], justify="left")  # paths fold instead of ending in "…"
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
