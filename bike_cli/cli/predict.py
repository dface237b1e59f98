"""`bike predict`: classes, temporal saliency and attributes of single videos (a thin shell over
stages.predict; the figure of --explain is drawn by report.explain)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from bike_cli.cli.app import app, console, run_guarded
from bike_cli.data.lexicons import LEXICONS
from bike_cli.stages.predict import PredictConfig, PredictResult, VideoPrediction, parse_class_names, run_predict

SPARKS = "▁▂▃▄▅▆▇█"
stdout = Console()  # the results; logs and errors go to stderr (`console`)


@app.command("predict")
def predict(
    videos: list[Path] = typer.Argument(..., help="Video files to recognise."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A Video-branch run folder (best.pt, else last.pt) or checkpoint file from train-video."),
    model: Optional[str] = typer.Option(None, "--model", help="Zero-shot: open_clip architecture, e.g. ViT-B-16 (or bike-tiny)."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Zero-shot: pretrained tag, checkpoint file or none. With --checkpoint: where its CLIP weights file is now, if it moved (same sha256)."),
    quick_gelu: Optional[bool] = typer.Option(None, "--quick-gelu/--no-quick-gelu", help="Zero-shot: force QuickGELU on or off \\[default: as for extract-features]."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="Zero-shot: class-name file (`id,name` CSV or one name per line)."),
    class_names: Optional[str] = typer.Option(None, "--class-names", help="Zero-shot: class names as free text, comma-separated: 'a,b,c'."),
    frames: Optional[int] = typer.Option(None, "--frames", "-T", help="Frames sampled (segment centres, centre crop) \\[default: the checkpoint's, else 8]."),
    lexicon: Optional[str] = typer.Option(None, "--lexicon", help=f"Attributes lexicon: built-in ({', '.join(LEXICONS)}), a phrase file, or none \\[default: k400 when available]."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Attributes per video."),
    head: Optional[str] = typer.Option(None, "--head", help="Zero-shot head: vcs (temporal saliency) or mean \\[default: vcs; a checkpoint's own]."),
    vcs_tokens: Optional[str] = typer.Option(None, "--vcs-tokens", help="Zero-shot VCS queries: words (the class name's tokens, Eq. 5) or all (77 positions, the authors' code) \\[default: words]."),
    top: int = typer.Option(5, "--top", help="Classes reported per video (the JSON key stays 'top5')."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document to stdout instead of tables (logs stay on stderr)."),
    explain: Optional[Path] = typer.Option(None, "--explain", help="Draw the paper's Fig. 3 (frames, saliency, attributes) into this image, one row per video (.png, .pdf, .svg...)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable videos with a message instead of stopping (exit 2) at the first one."),
    decoder: str = typer.Option("pyav", "--decoder", help="Video decoder: pyav or decord (the other one is tried on failure)."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device \\[default: cuda when available, else cpu]."),
) -> None:
    """Recognise videos with a trained Video branch (--checkpoint) or zero-shot CLIP, and explain them.

    Per video: the top classes with probabilities, the VCS temporal saliency of the predicted class
    over the sampled frames, and the generated attributes with their attribute sentence. All videos
    are processed before anything is printed or drawn: an unreadable video stops the run with exit
    code 2 and no output, unless --skip-bad.
    """
    cfg = PredictConfig(
        videos=list(videos), checkpoint=checkpoint, model=model, pretrained=pretrained, quick_gelu=quick_gelu,
        classes=classes, class_names=run_guarded(parse_class_names, class_names) if class_names is not None else None,
        frames=frames, head=head, vcs_tokens=vcs_tokens, lexicon=lexicon, top_k=top_k, top=top, explain=explain,
        skip_bad=skip_bad, decoder=decoder, device=device,
    )
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
    for prediction in result.predictions:
        stdout.print(video_table(prediction))
    for video, reason in result.skipped:
        console.print(f"[yellow]skipped[/] {video}: {reason}", highlight=False)


def video_table(p: VideoPrediction) -> Table:
    table = Table(title=str(p.video), title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
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
