"""`bike predict`: classes, temporal saliency and attributes of single videos (a thin shell over
stages.predict; the figure of --explain is drawn by report.explain)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bike_cli.cli import options as o
from bike_cli.cli.core import console, given, make_config, run_guarded, settings, stdout
from bike_cli.config.stages import PredictConfig, parse_class_names

if TYPE_CHECKING:
    from rich.table import Table

    from bike_cli.engine.evaluation import VideoPrediction
    from bike_cli.stages.predict import PredictResult

SPARKS = "▁▂▃▄▅▆▇█"



@settings(PredictConfig, frames="the checkpoint's, else 8",
          lexicon="k400 when available; none: no attributes", head="vcs; a checkpoint's own",
          vcs_tokens="words; a checkpoint's own")
def predict(
    videos: list[Path] = typer.Argument(..., help="Video files to recognise."),
    checkpoint: Annotated[Path | None, o.option(
        "--checkpoint", "A Video-branch run folder (best.pt, else last.pt) or checkpoint file from train-video, "
        "or an authors' released checkpoint (then give --model, --frames and the classes).",
        o.MODEL)] = None,
    model: o.Model = None,
    pretrained: o.Pretrained = None,
    quick_gelu: o.QuickGelu = None,
    head: o.Head = None,
    vcs_tokens: o.VcsTokens = None,
    class_texts: o.ClassTexts = None,
    classes: o.Classes = None,
    class_names: Annotated[str | None, o.option(
        "--class-names", "Zero-shot: class names as free text, comma-separated: 'a,b,c'.", o.INPUT)] = None,
    lexicon: o.Lexicon = None,
    frames: o.Frames = None,
    decoder: o.Decoder = None,
    top_k: o.TopK = None,
    top: Annotated[int | None, o.option(
        "--top", "Classes reported per video (the JSON key stays 'top5').", o.OUTPUT)] = None,
    as_json: Annotated[bool, o.option(
        "--json", "Print one JSON document to stdout instead of tables (logs stay on stderr).", o.OUTPUT)] = False,
    explain: Annotated[Path | None, o.option(
        "--explain", "Draw the paper's Fig. 3 (frames, saliency, attributes) into this image, one row per video "
        "(.png, .pdf, .svg...).", o.OUTPUT)] = None,
    skip_bad: Annotated[bool | None, o.option(
        "--skip-bad", "Skip unreadable videos with a message instead of stopping (exit 1) at the first one.",
        o.INPUT)] = None,
    device: o.Device = None,
    compat: o.Compat = None,
) -> None:
    """Recognise videos with a trained Video branch (--checkpoint) or zero-shot CLIP, and explain them.

    Per video: the top classes with probabilities, the VCS temporal saliency of the predicted class
    over the sampled frames, and the generated attributes with their attribute sentence. All videos
    are processed before anything is printed or drawn: an unreadable video stops the run with exit
    code 1 and no output, unless --skip-bad. Zero-shot: give --model and --pretrained (with
    --checkpoint, --pretrained says where its CLIP weights file is now, if it moved).
    """
    options = given(locals(), "as_json", "class_names")
    if class_names is not None:
        options["class_names"] = run_guarded(parse_class_names, class_names)
    cfg = make_config(PredictConfig, options)
    from bike_cli.stages.predict import run_predict

    result = run_guarded(run_predict, cfg)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        print_result(result)
    if result.explain is not None:
        console.print(f"explanation written to {result.explain}", highlight=False)


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled to the largest."""
    peak = max(values) or 1.0
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v / peak * (len(SPARKS) - 1) + 0.5))] for v in values)


def print_result(result: PredictResult) -> None:
    from rich.text import Text
    for prediction in result.predictions:
        stdout.print(video_table(prediction))
    for video, reason in result.skipped:
        console.print(Text("skipped", style="yellow"), f"{video}: {reason}", highlight=False)


def video_table(p: VideoPrediction) -> Table:
    from rich.table import Table

    from bike_cli.cli.tables import title

    table = Table(title=title(p.video), title_justify="left", show_header=False)
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
    return table
