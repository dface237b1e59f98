"""Options that several commands share, declared once: each a typed `Annotated` alias with its flag,
its one help text and its help panel.

Every alias defaults to None in the command's signature (`frames: Frames = None`): None means
"not given", so the settings dataclass's own default applies, and `--help` shows that default
(`core.BikeCommand`). Adding an option to a command is one line in its signature; one that
several commands share gets an alias here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from bike_cli.cli.core import INPUT, MODEL, OUTPUT, PERFORMANCE, SAMPLING, TRAINING
from bike_cli.data.lexicons import LEXICONS

F = TypeVar("F", bound=Callable[..., object])

# -- input -------------------------------------------------------------------------------------------
Classes = Annotated[Path | None, typer.Option(
    "--classes", rich_help_panel=INPUT,
    help="Class names in label order: an `id,name` CSV, one name per line, Charades' `c000 name` lines, or a "
    "built-in list (k400, k600, k700, ssv2, ucf101, hmdb51, anet, charades).")]
BaseClasses = Annotated[Path | None, typer.Option(
    "--base-classes", rich_help_panel=INPUT,
    help="Base-to-novel: train on these classes only (a class file, matched by name to the classes the labels "
    "index: --classes, the cache's, else this file's own); the videos of other classes are left out.")]
Root = Annotated[Path | None, typer.Option(
    "--root", rich_help_panel=INPUT, help="Folder that relative paths of the video list start from.")]
Features = Annotated[Path | None, typer.Option(
    "--features", rich_help_panel=INPUT, help="Feature cache (HDF5) written by extract-features.")]
Videos = Annotated[Path | None, typer.Option(
    "--videos", rich_help_panel=INPUT,
    help="Video list (`relpath label` text, a path,label CSV or the official Kinetics CSV), decoded here.")]
Recipe = Annotated[Path | None, typer.Option(
    "--recipe", rich_help_panel=INPUT, help="YAML recipe (see recipes/); every option given here overrides it.")]
LEXICON_HELP = f"Built-in lexicon ({', '.join(LEXICONS)}) or a phrase file: one phrase per line, # comments."
Lexicon = Annotated[str | None, typer.Option("--lexicon", rich_help_panel=INPUT, help=LEXICON_HELP)]
TopK = Annotated[int | None, typer.Option(
    "--top-k", "-k", rich_help_panel=OUTPUT, help="Attributes per video (the paper uses 5).")]

# -- model -------------------------------------------------------------------------------------------
Model = Annotated[str | None, typer.Option(
    "--model", rich_help_panel=MODEL,
    help="open_clip architecture, e.g. ViT-B-16, or bike-tiny (built in: random weights, for tests and the demo).")]
Pretrained = Annotated[str | None, typer.Option(
    "--pretrained", rich_help_panel=MODEL,
    help="Weights: a pretrained tag (e.g. openai), a local checkpoint file (.pt state dict, .safetensors, "
    "OpenAI TorchScript), or none (random init).")]
QuickGelu = Annotated[bool | None, typer.Option(
    "--quick-gelu/--no-quick-gelu", rich_help_panel=MODEL,
    help="Force QuickGELU on or off; by default on for the openai tag, TorchScript archives and -quickgelu names.")]
Head = Annotated[str | None, typer.Option(
    "--head", rich_help_panel=MODEL, help="mean (baseline) or vcs (Video Concept Spotting).")]
VcsTokens = Annotated[str | None, typer.Option(
    "--vcs-tokens", rich_help_panel=MODEL,
    help="VCS queries: words (the class name's word tokens, Eq. 5) or all (every context position, as the "
    "authors' code).")]
Compat = Annotated[str | None, typer.Option(
    "--compat", rich_help_panel=MODEL,
    help="bike (the paper reading), or authors: the released code's behaviour where the two differ on purpose "
    "(docs/reproducing.md); recorded in every file written and checked where files meet.")]
IgnoreVisualWeights = Annotated[bool | None, typer.Option(
    "--ignore-visual-weights", rich_help_panel=MODEL,
    help="Use a checkpoint whose visual encoder did not make the feature cache, keeping the cache's "
    "features (its visual weights are not used).")]
AllowModelMismatch = Annotated[bool | None, typer.Option(
    "--allow-model-mismatch", rich_help_panel=MODEL,
    help="Warn instead of refusing when the model is not the one that made the feature cache (experts only; "
    "a model of another embedding width is refused all the same).")]
Templates = Annotated[list[str] | None, typer.Option(
    "--template", rich_help_panel=MODEL, help="Class prompt with {} for the name; repeat to average several.")]
ClassTexts = Annotated[Path | None, typer.Option(
    "--class-texts", rich_help_panel=MODEL,
    help="Several descriptions per class, averaged: a `class,text` CSV or a JSON {\"class\": [\"text\", ...]} "
    "(docs/formats.md); each fills the templates in the class name's place.")]

# -- sampling ----------------------------------------------------------------------------------------
Frames = Annotated[int | None, typer.Option(
    "--frames", "-T", rich_help_panel=SAMPLING, help="Frames per clip T (TSN segments).")]
Views = Annotated[str | None, typer.Option(
    "--views", rich_help_panel=SAMPLING,
    help="CxS: C temporal clips x S spatial crops (S = 1 centre or 3 left/centre/right; --compat authors also "
         "5 = corners + centre, 10 = those and their mirror images), e.g. 4x3.")]
Decoder = Annotated[str | None, typer.Option(
    "--decoder", rich_help_panel=SAMPLING,
    help="Video decoder: pyav (decodes only what the sampled frames need, bit-exactly) or decord. The other one "
    "is tried on files the first cannot read.")]
Seed = Annotated[int | None, typer.Option(
    "--seed", rich_help_panel=SAMPLING,
    help="Seed of everything random here (frame sampling, initialisation, data order, class draws).")]

# -- training ----------------------------------------------------------------------------------------
Epochs = Annotated[int | None, typer.Option("--epochs", rich_help_panel=TRAINING, help="Training epochs.")]
GradAccum = Annotated[int | None, typer.Option(
    "--grad-accum", rich_help_panel=TRAINING, help="Gradient accumulation steps.")]
Lr = Annotated[float | None, typer.Option(
    "--lr", rich_help_panel=TRAINING, help="Learning rate of the new layers.")]
ClipLrRatio = Annotated[float | None, typer.Option(
    "--clip-lr-ratio", rich_help_panel=TRAINING, help="Learning rate of fine-tuned CLIP layers = lr x this.")]
WeightDecay = Annotated[float | None, typer.Option(
    "--weight-decay", rich_help_panel=TRAINING, help="AdamW weight decay.")]
WarmupEpochs = Annotated[float | None, typer.Option(
    "--warmup-epochs", rich_help_panel=TRAINING, help="Linear warm-up epochs before the cosine schedule.")]
ValEvery = Annotated[int | None, typer.Option(
    "--val-every", rich_help_panel=TRAINING, help="Validate every N epochs.")]
Loss = Annotated[str | None, typer.Option(
    "--loss", rich_help_panel=TRAINING,
    help="bike (the paper's Eq. 7/8) or authors (their KL loss); by default the --compat profile's.")]
Resume = Annotated[bool | None, typer.Option(
    "--resume/--no-resume", rich_help_panel=TRAINING,
    help="Continue the run in --out from its last complete epoch.")]

# -- output ------------------------------------------------------------------------------------------
Overwrite = Annotated[bool | None, typer.Option(
    "--overwrite", rich_help_panel=OUTPUT, help="Discard what an earlier run left in --out instead of resuming it.")]


def out_option(help: str, required: bool = False) -> typer.models.OptionInfo:
    """`--out`: every command has one; what it holds is the command's own."""
    return typer.Option(... if required else None, "--out", rich_help_panel=OUTPUT, help=help)


# -- performance -------------------------------------------------------------------------------------
BatchSize = Annotated[int | None, typer.Option(
    "--batch-size", rich_help_panel=PERFORMANCE,
    help="Videos per batch; training: the global batch B of the B x B contrastive matrix, over all processes.")]
Workers = Annotated[int | None, typer.Option(
    "--workers", rich_help_panel=PERFORMANCE, help="DataLoader worker processes (0 = load in the main process).")]
Device = Annotated[str | None, typer.Option(
    "--device", rich_help_panel=PERFORMANCE,
    help="torch device, cpu or cuda (cuda:N); by default this process's GPU when there is one, else cpu.")]
Precision = Annotated[str | None, typer.Option(
    "--precision", rich_help_panel=PERFORMANCE,
    help="auto (bf16/fp16 autocast on GPU, fp32 on CPU), fp32, bf16 or fp16.")]


def option(flag: str, help: str, panel: str) -> typer.models.OptionInfo:
    """A command's own option (one command has it), with its help panel."""
    return typer.Option(flag, rich_help_panel=panel, help=help)


# The training block of train-video and train-attrs: the same options, one declaration.
TRAINING_BLOCK: dict[str, object] = {
    "seed": Seed, "epochs": Epochs, "grad_accum": GradAccum, "lr": Lr, "clip_lr_ratio": ClipLrRatio,
    "weight_decay": WeightDecay, "warmup_epochs": WarmupEpochs, "val_every": ValEvery, "resume": Resume,
    "compat": Compat, "loss": Loss,
    "overwrite": Overwrite, "batch_size": BatchSize, "workers": Workers, "device": Device, "precision": Precision,
}


def with_options(block: dict[str, object]) -> Callable[[F], F]:
    """Add the options of `block` (name -> alias) to a command's signature, each defaulting to None.

    The command takes them as `**kwargs` and receives them by name, as Typer passes every option.
    """

    def add(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=alias)
                 for name, alias in block.items() if name not in signature.parameters]
        func.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        return func

    return add
