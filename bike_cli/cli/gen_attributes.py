"""`bike gen-attributes`: feature cache + lexicon -> attributes CSV (and S_A scores), a thin shell over
stages.gen_attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bike_cli.cli.app import app, console, run_guarded
from bike_cli.cli.progress import RichProgress
from bike_cli.data.lexicons import LEXICONS
from bike_cli.models.text import DEFAULT_TEMPLATE
from bike_cli.stages.gen_attributes import GenAttributesConfig, GenAttributesSummary, run_gen_attributes


@app.command("gen-attributes")
def gen_attributes(
    features: Path = typer.Option(..., "--features", help="Feature cache (HDF5) written by extract-features."),
    lexicon: str = typer.Option(..., "--lexicon", help=f"Built-in lexicon ({', '.join(LEXICONS)}) or a phrase file: one phrase per line, # comments."),
    out: Path = typer.Option(..., "--out", help="Attributes CSV to write."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Attributes per video (the paper uses 5)."),
    model: Optional[str] = typer.Option(None, "--model", help="open_clip architecture of the text encoder \\[default: the cache's]."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Pretrained tag, checkpoint file or none \\[default: the cache's]."),
    quick_gelu: Optional[bool] = typer.Option(None, "--quick-gelu/--no-quick-gelu", help="Force QuickGELU on or off \\[default: as the cache was made]."),
    prompt: str = typer.Option("{}", "--prompt", help="Template each phrase is put in before encoding; '{}' = the bare phrase, as in the paper."),
    sentence_template: str = typer.Option(DEFAULT_TEMPLATE, "--sentence-template", help="Attribute sentence; '{}' receives the attributes."),
    separator: str = typer.Option(",", "--separator", help="Joins the attributes in the sentence (',' as in the authors' code)."),
    class_prompt: str = typer.Option(DEFAULT_TEMPLATE, "--class-prompt", help="Prompt of the class names for --scores."),
    drop_own_class: bool = typer.Option(False, "--drop-own-class", help="Never choose a video's own class name as its attribute (ablation)."),
    per_view: bool = typer.Option(False, "--per-view", help="One row per video and view instead of one per video (views mean-pooled)."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Class names \\[default: those recorded in the cache]."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Also write S_A, the zero-training Attributes recognition scores, to this CSV."),
    phrase_cache: Optional[Path] = typer.Option(None, "--phrase-cache", help="File of the phrase embeddings, reused while model, prompt and lexicon match \\[default: OUT stem + .phrases.pt]."),
    chunk_size: int = typer.Option(4096, "--chunk-size", help="Rows (videos, or video views) per similarity product."),
    max_elements: int = typer.Option(1 << 25, "--max-elements", help="Most entries in one block of similarities or of features read: bounds memory (peak about 6 bytes per entry)."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device \\[default: cuda when available, else cpu]."),
    allow_model_mismatch: bool = typer.Option(False, "--allow-model-mismatch", help="Warn instead of refusing when the text encoder is not the model that made the cache (experts only)."),
) -> None:
    """Associate each video of a feature cache with its top-k lexicon phrases (BIKE's attributes).

    Writes video_id, label, attr_1..k, score_1..k and the attribute sentence per video; with
    --scores also the Attributes-branch recognition scores S_A, which need no training.
    """
    cfg = GenAttributesConfig(
        features=features, lexicon=lexicon, out=out, model=model, pretrained=pretrained, quick_gelu=quick_gelu,
        top_k=top_k, prompt=prompt, sentence_template=sentence_template, separator=separator,
        class_prompt=class_prompt, drop_own_class=drop_own_class, per_view=per_view, chunk_size=chunk_size,
        max_elements=max_elements, classes=classes, scores=scores, phrase_cache=phrase_cache, device=device,
        allow_model_mismatch=allow_model_mismatch,
    )
    print_summary(run_guarded(run_gen_attributes, cfg, RichProgress("videos")))


def print_summary(summary: GenAttributesSummary) -> None:
    table = Table(title="gen-attributes", show_header=False, title_justify="left")
    table.add_row("videos", f"{summary.videos} ({summary.rows} rows)")
    table.add_row("lexicon", f"{summary.phrases} phrases, top {summary.top_k}")
    reuse = "reused" if summary.phrase_cache_reused else "computed"
    table.add_row("phrase embeddings", f"{summary.phrase_cache} ({reuse})")
    if summary.own_class_phrases:
        table.add_row("own class dropped", f"{summary.own_class_phrases} class names are phrases")
    table.add_row("attributes", str(summary.out))
    if summary.scores_csv is not None:
        table.add_row("S_A scores", str(summary.scores_csv))
    for name, value in summary.metrics.items():
        table.add_row(f"S_A {name}", f"{value:.2f} %")
    total = summary.seconds.get("total", 0.0)
    per_video = 1000 * total / summary.videos if summary.videos else 0.0
    table.add_row("time", f"{total:.1f} s ({per_video:.3f} ms per video)")
    console.print(table)
