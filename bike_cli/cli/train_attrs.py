"""`bike train-attrs`: train the Attributes branch (a thin shell over stages.train_attrs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bike_cli.cli import options as o
from bike_cli.cli.core import given, make_config, settings
from bike_cli.cli.train_video import run_training_command
from bike_cli.config.stages import TrainAttrsConfig


@o.with_options(o.TRAINING_BLOCK)
@settings(TrainAttrsConfig, model="the one that generated the attributes",
          pretrained="the one that generated the attributes", classes="the names the attributes file records")
def train_attrs(
    attributes: Annotated[Path | None, typer.Option(
        "--attributes", rich_help_panel=o.INPUT, help="Training attributes CSV from gen-attributes.")] = None,
    val_attributes: Annotated[Path | None, typer.Option(
        "--val-attributes", rich_help_panel=o.INPUT, help="Validation attributes CSV.")] = None,
    classes: o.Classes = None,
    base_classes: o.BaseClasses = None,
    recipe: o.Recipe = None,
    model: o.Model = None,
    pretrained: o.Pretrained = None,
    quick_gelu: o.QuickGelu = None,
    allow_model_mismatch: o.AllowModelMismatch = None,
    tune: Annotated[str | None, typer.Option(
        "--tune", rich_help_panel=o.MODEL,
        help="head: frozen text encoder + MLPs (cheap; the authors' code); full: the text encoder fine-tuned "
        "(Table 6e).")] = None,
    templates: o.Templates = None,
    class_texts: o.ClassTexts = None,
    out: Path | None = o.out_option("Run folder: config.yaml, metrics.jsonl, best.pt, last.pt, checkpoints/."),
    **training: object,  # o.TRAINING_BLOCK
) -> None:
    """Train BIKE's Attributes branch: attribute sentences -> class prompts (Eq. 8).

    Multi-GPU / multi-node: `accelerate launch --multi_gpu --num_processes N -m bike_cli train-attrs ...`.
    """
    params = {**locals(), **training}
    cfg = make_config(TrainAttrsConfig, given(params, "recipe", "training"), recipe, "train-attrs", params)
    from bike_cli.stages.train_attrs import run_train_attrs

    run_training_command("train-attrs", cfg, run_train_attrs)
