"""`bike eval`: multi-view scores, fusion and metrics (a thin shell over stages.evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from bike_cli.cli import options as o
from bike_cli.cli.core import console, given, make_config, run_guarded, settings, variadic
from bike_cli.cli.tables import Folded, add_columns, metric_cells
from bike_cli.config.stages import EvalConfig

if TYPE_CHECKING:
    from bike_cli.stages.evaluate import EvalSummary



@settings(EvalConfig, classes="the checkpoint's, else the cache's",
          model="zero-shot: the cache's",
          pretrained="zero-shot: the cache's; with --checkpoint: its CLIP weights file where it is now, if it moved",
          frames="the checkpoint's, else the cache's, else 8", views="the cache's",
          vcs_tokens="words zero-shot; all with an authors' checkpoint", head="vcs; a checkpoint's own",
          templates="'This is a video about {}'; a checkpoint's own")
@variadic("--split-lists")
def evaluate(
    out: Path = o.out_option("Folder for video_scores.csv, attrs_scores.csv, fused_scores.csv and metrics.json.",
                             required=True),
    checkpoint: Annotated[Path | None, o.option(
        "--checkpoint", "Video-branch run folder (best.pt) or checkpoint file, bike's or the authors' released one "
        "(then give --model and --frames). Without it: zero-shot CLIP.",
        o.MODEL)] = None,
    features: Annotated[Path | None, o.option(
        "--features", "Test feature cache (its views are all scored).", o.INPUT)] = None,
    videos: Annotated[Path | None, o.option("--videos", "Test video list (decoded here with --views).", o.INPUT)] = None,
    root: o.Root = None,
    classes: o.Classes = None,
    attributes: Annotated[Path | None, o.option(
        "--attributes", "Attributes CSV of the test videos (adds the Attributes branch).", o.INPUT)] = None,
    attrs_checkpoint: Annotated[Path | None, o.option(
        "--attrs-checkpoint", "train-attrs run folder or checkpoint; without it the Attributes branch is the "
        "zero-training one.", o.MODEL)] = None,
    model: o.Model = None,
    pretrained: o.Pretrained = None,
    quick_gelu: o.QuickGelu = None,
    head: o.Head = None,
    vcs_tokens: o.VcsTokens = None,
    templates: o.Templates = None,
    class_texts: o.ClassTexts = None,
    frames: o.Frames = None,
    views: o.Views = None,
    fuse: Annotated[float | None, o.option(
        "--fuse", "lambda of S = lambda*S_V + (1-lambda)*S_A, e.g. 0.6.", o.OUTPUT)] = None,
    protocol: Annotated[str | None, o.option(
        "--protocol", "full, zero-shot-half (seeded half-class draws), k600-splits, splits (the official test "
        "splits of --split-lists, all classes: mean and std) or base-novel (base and novel accuracy, each among "
        "its own classes, and their harmonic mean).", o.OUTPUT)] = None,
    base_classes: Annotated[Path | None, o.option(
        "--base-classes", "base-novel: the base classes' class file (matched by name to the scored classes).",
        o.OUTPUT)] = None,
    novel_classes: Annotated[Path | None, o.option(
        "--novel-classes", "base-novel: the novel classes' class file.", o.OUTPUT)] = None,
    novel_features: Annotated[Path | None, o.option(
        "--novel-features", "base-novel: the novel classes' test cache when it is not --features (whose labels "
        "then index --base-classes, this one's --novel-classes: ViFi-CLIP's base_val / novel_val).",
        o.INPUT)] = None,
    novel_videos: Annotated[Path | None, o.option(
        "--novel-videos", "base-novel: the novel classes' test video list (labels indexing --novel-classes).",
        o.INPUT)] = None,
    split_lists: Annotated[list[str] | None, o.option(
        "--split-lists", "--protocol splits: the test-split lists, one or more after the flag (--split-lists A B "
        "C): video lists (UCF-101's testlist0N.txt, ViFi-CLIP's val1.txt, any list bike reads) or HMDB-51's "
        "<class>_test_split<N>.txt files (a folder, a quoted glob or the files: one list per N). Listed videos "
        "are the cache's of the same id, else of the same file stem.", o.OUTPUT)] = None,
    repeats: Annotated[int | None, o.option("--repeats", "Repetitions of zero-shot-half.", o.OUTPUT)] = None,
    seed: o.Seed = None,
    plots: Annotated[Path | None, o.option(
        "--plots", "Folder for PNG plots: per-class accuracy and the fusion-weight curve.", o.OUTPUT)] = None,
    batch_size: o.BatchSize = None,
    workers: Annotated[int | None, o.option(
        "--workers", "DataLoader worker processes that decode --videos (0 = decode in the main process); a "
        "feature cache is read in large slabs in the main process.", o.PERFORMANCE)] = None,
    device: o.Device = None,
    compat: o.Compat = None,
    ignore_visual_weights: o.IgnoreVisualWeights = None,
    allow_model_mismatch: o.AllowModelMismatch = None,
) -> None:
    """Score a test set with the Video branch (and the Attributes branch), fuse them and report metrics.

    Views are scored as softmax(scale x logits) and averaged per video. Zero-shot (no --checkpoint)
    from a cache uses the cache's model, weights and frame count unless told otherwise.
    """
    cfg = make_config(EvalConfig, given(locals()))
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.evaluate import run_eval

    print_metrics(run_guarded(run_eval, cfg, RichProgress("videos")))


def print_metrics(summary: EvalSummary) -> None:
    from rich.table import Table
    from rich.text import Text

    branches = list(summary.metrics)
    cells = {branch: metric_cells(summary.metrics[branch]) for branch in branches}
    names = list(cells[branches[0]])
    table = Table(title=f"eval: {summary.videos} videos ({summary.metrics[branches[0]]['protocol']}, %)",
                  title_justify="left")
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
