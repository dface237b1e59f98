"""`bike merge`: a fine-tuned visual encoder interpolated with the original CLIP's (a thin shell over
stages.merge)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bike_cli.cli import options as o
from bike_cli.cli.core import console, given, make_config, run_guarded, settings
from bike_cli.config.stages import MergeConfig


@settings(MergeConfig, pretrained="the file the run records")
def merge(
    run: Path = typer.Argument(..., help="A train-video run trained end to end (--videos): its folder (best.pt, "
                               "else last.pt) or a checkpoint file (last.pt, averaged.pt...)."),
    alpha: float = typer.Option(..., "--alpha", rich_help_panel=o.MODEL,
                                help="Weight of the fine-tuned visual encoder, in [0, 1]: 0 is the original "
                                "CLIP's, 1 the run's, 0.5 their mean (WiSE-FT's usual choice)."),
    out: Path = o.out_option("Merged checkpoint to write (eval and predict read it as --checkpoint).",
                             required=True),
    pretrained: Annotated[str | None, o.option(
        "--pretrained", "The CLIP weights file the run was trained from, where it is now (it must be the same "
        "file: sha256).", o.MODEL)] = None,
    overwrite: Annotated[bool | None, o.option("--overwrite", "Replace an existing --out file.", o.OUTPUT)] = None,
) -> None:
    """Interpolate a fine-tuned visual encoder with the CLIP it started from (WiSE-FT, Open-VCLIP).

    visual = (1 - alpha) x original + alpha x fine-tuned, tensor by tensor. The temporal transformer,
    the head and the logit scale are kept from the run; the text encoder is CLIP's own (train-video
    never trains it).
    """
    cfg = make_config(MergeConfig, given({"run": run, "out": out, "alpha": alpha, "pretrained": pretrained,
                                          "overwrite": overwrite}))
    from bike_cli.stages.merge import run_merge

    summary = run_guarded(run_merge, cfg)
    console.print(f"merge: wrote {summary.out}: {summary.interpolated} visual tensors of {summary.source} "
                  f"interpolated with {summary.clip} at alpha {summary.alpha:g}; {summary.kept} kept from the run "
                  "(temporal transformer, head, logit scale)", highlight=False, soft_wrap=True)
