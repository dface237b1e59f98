"""The `bike` command: every stage command (options -> settings dataclass -> one stage call -> a table), in
stage order. A command imports its stage (and torch) in its body, so help and argument errors load no torch;
`cli.torch_pair` checks torch and torchvision before a command runs. The options several commands share are
`Annotated` aliases, each None ("not given": the settings dataclass's default applies and `--help` shows it).
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from bike_cli.cli import core, tables
from bike_cli.cli.core import INPUT, MODEL, OUTPUT, PERFORMANCE, SAMPLING, TRAINING, app, given, make_config
from bike_cli.cli.torch_pair import installed_mismatch
from bike_cli.config import stages as configs
from bike_cli.data.lexicons import LEXICONS

MODEL_NEEDED = ("extract-features needs --model: an open_clip architecture with its weights, e.g. "
                "--model ViT-B-16 --pretrained openai, or --model bike-tiny (built in, random weights: tests only)")

def option(flag: str, help: str, panel: str) -> typer.models.OptionInfo:
    """An option with its help panel."""
    return typer.Option(flag, rich_help_panel=panel, help=help)


Classes = Annotated[Path | None, option(
    "--classes", "Class names in label order: an `id,name` CSV, one name per line, Charades' `c000 name` lines, or a "
    "built-in list (k400, k600, k700, ssv2, ucf101, hmdb51, anet, charades).", INPUT)]
BaseClasses = Annotated[Path | None, option(
    "--base-classes", "Base-to-novel: train on these classes only (a class file, matched by name to the classes the "
    "labels index: --classes, the cache's, else this file's own); the videos of other classes are left out.", INPUT)]
Root = Annotated[Path | None, option("--root", "Folder that relative paths of the video list start from.", INPUT)]
Recipe = Annotated[Path | None, option(
    "--recipe", "YAML recipe (see recipes/); every option given here overrides it.", INPUT)]
LEXICON_HELP = f"Built-in lexicon ({', '.join(LEXICONS)}) or a phrase file: one phrase per line, # comments."
Lexicon = Annotated[str | None, typer.Option("--lexicon", rich_help_panel=INPUT, help=LEXICON_HELP)]
TopK = Annotated[int | None, typer.Option(
    "--top-k", "-k", rich_help_panel=OUTPUT, help="Attributes per video (the paper uses 5).")]

Model = Annotated[str | None, option(
    "--model", "open_clip architecture, e.g. ViT-B-16, or bike-tiny (built in: random weights, for tests and the "
    "demo).", MODEL)]
Pretrained = Annotated[str | None, option(
    "--pretrained", "Weights: a pretrained tag (e.g. openai), a local checkpoint file (.pt state dict, .safetensors, "
    "OpenAI TorchScript), or none (random init).", MODEL)]
QuickGelu = Annotated[bool | None, option(
    "--quick-gelu/--no-quick-gelu", "Force QuickGELU on or off; by default on for the openai tag, TorchScript archives "
    "and -quickgelu names.", MODEL)]
Head = Annotated[str | None, option("--head", "mean (baseline) or vcs (Video Concept Spotting).", MODEL)]
VcsTokens = Annotated[str | None, option(
    "--vcs-tokens", "VCS queries: words (the class name's word tokens, Eq. 5) or all (every context position, as the "
    "authors' code).", MODEL)]
Compat = Annotated[str | None, option(
    "--compat", "bike (the paper reading), or authors: the released code's behaviour where the two differ on purpose "
    "(docs/reproducing.md); recorded in every file written and checked where files meet.", MODEL)]
IgnoreVisualWeights = Annotated[bool | None, option(
    "--ignore-visual-weights", "Use a checkpoint whose visual encoder did not make the feature cache, keeping the "
    "cache's features (its visual weights are not used).", MODEL)]
AllowModelMismatch = Annotated[bool | None, option(
    "--allow-model-mismatch", "Warn instead of refusing when the model is not the one that made the feature cache "
    "(experts only; a model of another embedding width is refused all the same).", MODEL)]
Templates = Annotated[list[str] | None, option(
    "--template", "Class prompt with {} for the name; repeat to average several.", MODEL)]
ClassTexts = Annotated[Path | None, option(
    "--class-texts", "Several descriptions per class, averaged: a `class,text` CSV or a JSON {\"class\": [\"text\", "
    "...]} (docs/formats.md); each fills the templates in the class name's place.", MODEL)]

Frames = Annotated[int | None, typer.Option(
    "--frames", "-T", rich_help_panel=SAMPLING, help="Frames per clip T (TSN segments).")]
Views = Annotated[str | None, option(
    "--views", "CxS: C temporal clips x S spatial crops (S = 1 centre or 3 left/centre/right; --compat authors also 5 "
    "= corners + centre, 10 = those and their mirror images), e.g. 4x3.", SAMPLING)]
Decoder = Annotated[str | None, option(
    "--decoder", "Video decoder: pyav (decodes only what the sampled frames need, bit-exactly) or decord. The other "
    "one is tried on files the first cannot read.", SAMPLING)]
Seed = Annotated[int | None, option(
    "--seed", "Seed of everything random here (frame sampling, initialisation, data order, class draws).", SAMPLING)]

Epochs = Annotated[int | None, option("--epochs", "Training epochs.", TRAINING)]
GradAccum = Annotated[int | None, option("--grad-accum", "Gradient accumulation steps.", TRAINING)]
Lr = Annotated[float | None, option("--lr", "Learning rate of the new layers.", TRAINING)]
ClipLrRatio = Annotated[float | None, option(
    "--clip-lr-ratio", "Learning rate of fine-tuned CLIP layers = lr x this.", TRAINING)]
WeightDecay = Annotated[float | None, option("--weight-decay", "AdamW weight decay.", TRAINING)]
WarmupEpochs = Annotated[float | None, option(
    "--warmup-epochs", "Linear warm-up epochs before the cosine schedule.", TRAINING)]
ValEvery = Annotated[int | None, option("--val-every", "Validate every N epochs.", TRAINING)]
Loss = Annotated[str | None, option(
    "--loss", "bike (the paper's Eq. 7/8) or authors (their KL loss); by default the --compat profile's.", TRAINING)]
Resume = Annotated[bool | None, option(
    "--resume/--no-resume", "Continue the run in --out from its last complete epoch.", TRAINING)]

Overwrite = Annotated[bool | None, option(
    "--overwrite", "Discard what an earlier run left in --out instead of resuming it.", OUTPUT)]


def out_option(help: str, required: bool = False) -> typer.models.OptionInfo:
    """`--out`: every command has one; what it holds is the command's own."""
    return typer.Option(... if required else None, "--out", rich_help_panel=OUTPUT, help=help)


BatchSize = Annotated[int | None, option(
    "--batch-size", "Videos per batch; training: the global batch B of the B x B contrastive matrix, over all "
    "processes.", PERFORMANCE)]
Workers = Annotated[int | None, option(
    "--workers", "DataLoader worker processes (0 = load in the main process).", PERFORMANCE)]
Device = Annotated[str | None, option(
    "--device", "torch device, cpu or cuda (cuda:N); by default this process's GPU when there is one, else cpu.",
    PERFORMANCE)]
Precision = Annotated[str | None, option(
    "--precision", "auto (bf16/fp16 autocast on GPU, fp32 on CPU), fp32, bf16 or fp16.", PERFORMANCE)]


# The training block of train-video and train-attrs: the same options, one declaration.
TRAINING_BLOCK: dict[str, object] = {
    "seed": Seed, "epochs": Epochs, "grad_accum": GradAccum, "lr": Lr, "clip_lr_ratio": ClipLrRatio,
    "weight_decay": WeightDecay, "warmup_epochs": WarmupEpochs, "val_every": ValEvery, "resume": Resume,
    "compat": Compat, "loss": Loss,
    "overwrite": Overwrite, "batch_size": BatchSize, "workers": Workers, "device": Device, "precision": Precision,
}


def with_options(block: dict[str, object]) -> Callable[[core.F], core.F]:
    """Add the options of `block` (name -> alias) to a command's signature, each defaulting to None: the
    command takes them as `**kwargs`, by name, as Typer passes every option."""

    def add(func: core.F) -> core.F:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=alias)
                 for name, alias in block.items() if name not in signature.parameters]
        func.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        return func

    return add


@core.settings(configs.ExtractConfig, model=None, root="the list's folder", failures="OUT stem + .failures.csv")
def extract_features(
    list_path: Annotated[Path, option(
        "--list", "Video list: `relpath label` text, CSV with path,label, or the official Kinetics CSV.", INPUT)],
    out: Path = out_option("Feature cache to write (HDF5, .h5). Re-running resumes it.", required=True),
    root: Root = None,
    classes: Classes = None,
    model: Model = None,
    pretrained: Pretrained = None,
    quick_gelu: QuickGelu = None,
    frames: Frames = None,
    views: Views = None,
    sampling: Annotated[str | None, option(
        "--sampling", "test: segment centres (deterministic); train: a random frame per segment, seeded per video.",
        SAMPLING)] = None,
    seed: Seed = None,
    decoder: Decoder = None,
    failures: Annotated[Path | None, option(
        "--failures", "CSV of the videos that could not be read, with the reason.", OUTPUT)] = None,
    strict: Annotated[bool | None, option(
        "--strict", "Exit with code 1 when any video could not be read.", OUTPUT)] = None,
    overwrite: Overwrite = None,
    batch_size: BatchSize = None,
    workers: Workers = None,
    device: Device = None,
    precision: Precision = None,
    compat: Compat = None,
) -> None:
    """Decode T frames x C*S views of every video and store their CLIP image embeddings [N, V, T, D].

    Finished videos are skipped when the command is run again; unreadable videos are listed in the
    failures CSV. Several processes: `accelerate launch --num_processes N -m bike_cli extract-features ...`.
    """
    options = given(locals())
    if model is None:
        core.fail(MODEL_NEEDED, core.EXIT_USAGE)
    cfg = make_config(configs.ExtractConfig, options)
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.extract import run_extraction

    summary = core.run_guarded(run_extraction, cfg, RichProgress("videos"))
    if not summary.is_main:  # the other processes of a distributed run: rank 0 reports
        return
    tables.print_extract(summary)
    if cfg.strict and summary.failed:
        core.fail(f"--strict: {summary.failed} of {summary.videos_in_list} videos could not be read (listed in "
                  f"{summary.failures_csv}); {summary.cache} holds the {summary.cached} that could")


@core.settings(configs.GenAttributesConfig, model="the cache's", pretrained="the cache's",
               quick_gelu="as the cache was made", classes="those recorded in the cache",
               phrase_cache="OUT stem + .phrases.pt")
def gen_attributes(
    features: Annotated[Path, option("--features", "Feature cache (HDF5) written by extract-features.", INPUT)],
    lexicon: Annotated[str, typer.Option(
        "--lexicon", rich_help_panel=INPUT, help=LEXICON_HELP)],
    out: Path = out_option("Attributes CSV to write.", required=True),
    classes: Classes = None,
    top_k: TopK = None,
    model: Model = None,
    pretrained: Pretrained = None,
    quick_gelu: QuickGelu = None,
    prompt: Annotated[str | None, option(
        "--prompt", "Template each phrase is put in before encoding; '{}' = the bare phrase, as in the paper.",
        MODEL)] = None,
    sentence_template: Annotated[str | None, option(
        "--sentence-template", "Attribute sentence; '{}' receives the attributes.", MODEL)] = None,
    separator: Annotated[str | None, option(
        "--separator", "Joins the attributes in the sentence (',' as in the authors' code).", MODEL)] = None,
    class_prompt: Annotated[str | None, option(
        "--class-prompt", "Prompt of the class names for --scores.", MODEL)] = None,
    drop_own_class: Annotated[bool | None, option(
        "--drop-own-class", "Never choose a video's own class name as its attribute (ablation).", MODEL)] = None,
    per_view: Annotated[bool | None, option(
        "--per-view", "One row per video and view instead of one per video (views mean-pooled).", OUTPUT)] = None,
    scores: Annotated[Path | None, option(
        "--scores", "Also write S_A, the zero-training Attributes recognition scores, to this CSV.", OUTPUT)] = None,
    phrase_cache: Annotated[Path | None, option(
        "--phrase-cache", "File of the phrase embeddings, reused while model, prompt and lexicon match.",
        OUTPUT)] = None,
    chunk_size: Annotated[int | None, option(
        "--chunk-size", "Rows (videos, or video views) per similarity product.", PERFORMANCE)] = None,
    max_elements: Annotated[int | None, option(
        "--max-elements", "Most entries in one block of similarities or of features read: bounds memory "
        "(peak about 6 bytes per entry).", PERFORMANCE)] = None,
    text_batch_size: Annotated[int | None, option(
        "--text-batch-size", "Phrases and sentences per text-encoder call.", PERFORMANCE)] = None,
    device: Device = None,
    allow_model_mismatch: AllowModelMismatch = None,
) -> None:
    """Associate each video of a feature cache with its top-k lexicon phrases (BIKE's attributes).

    Writes video_id, label, attr_1..k, score_1..k and the attribute sentence per video; with
    --scores also the Attributes-branch recognition scores S_A, which need no training.
    """
    cfg = make_config(configs.GenAttributesConfig, given(locals()))
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.gen_attributes import run_gen_attributes

    tables.print_gen_attributes(core.run_guarded(run_gen_attributes, cfg, RichProgress("videos")))


@with_options(TRAINING_BLOCK)
@core.settings(configs.TrainVideoConfig, model="with --features: the cache's model",
               pretrained="with --features: the cache's weights", classes="those recorded in the cache",
               vcs_tokens="words; all with an authors' --init-from under --compat authors")
def train_video(
    features: Annotated[Path | None, option(
        "--features", "Training feature cache from extract-features (CLIP frozen: trains the temporal head and "
        "logit scale).", INPUT)] = None,
    videos: Annotated[Path | None, option(
        "--videos", "Training video list (end to end: CLIP's visual encoder is fine-tuned too).", INPUT)] = None,
    root: Root = None,
    classes: Classes = None,
    base_classes: BaseClasses = None,
    val_features: Annotated[Path | None, option(
        "--val-features", "Validation feature cache (all its views are scored).", INPUT)] = None,
    val_videos: Annotated[Path | None, option(
        "--val-videos", "Validation video list (end-to-end mode).", INPUT)] = None,
    val_root: Annotated[Path | None, option(
        "--val-root", "Folder that relative paths of --val-videos start from.", INPUT)] = None,
    recipe: Recipe = None,
    model: Model = None,
    pretrained: Pretrained = None,
    quick_gelu: QuickGelu = None,
    init_from: Annotated[Path | None, option(
        "--init-from", "Start from a trained Video branch: a bike run folder or checkpoint, or the authors' "
        "released BIKE checkpoint.", MODEL)] = None,
    ignore_visual_weights: IgnoreVisualWeights = None,
    allow_model_mismatch: AllowModelMismatch = None,
    head: Head = None,
    temporal: Annotated[str | None, option(
        "--temporal", "none or transformer (a temporal transformer before the head).", MODEL)] = None,
    temporal_layers: Annotated[int | None, option(
        "--temporal-layers", "Layers of the temporal transformer.", MODEL)] = None,
    vcs_tokens: VcsTokens = None,
    tau: Annotated[float | None, option("--tau", "VCS softmax temperature.", MODEL)] = None,
    templates: Templates = None,
    class_texts: ClassTexts = None,
    frames: Frames = None,
    shots: Annotated[int | None, option(
        "--shots", "Few-shot: train on K videos per class (a seeded, reproducible sample).", TRAINING)] = None,
    shots_list: Annotated[Path | None, option(
        "--shots-list", "Few-shot: train on exactly the videos of a published K-shot list (ViFi-CLIP's "
        "train1_few_shot_K.txt, or any video list); videos matched by id, else file stem; its labels unused.",
        TRAINING)] = None,
    samples_per_epoch: Annotated[int | None, option(
        "--samples-per-epoch", "Cycle the training set to this many samples per epoch (few-shot runs: as many "
        "steps as a full-data epoch, as the paper does).", TRAINING)] = None,
    average_last: Annotated[int | None, option(
        "--average-last", "Also write averaged.pt in --out: the mean of the weights of the last N epochs (SWA, "
        "FROSTER); an ordinary checkpoint for eval and predict.", TRAINING)] = None,
    out: Path | None = out_option("Run folder: config.yaml, metrics.jsonl, best.pt, last.pt, checkpoints/."),
    grad_checkpointing: Annotated[bool | None, option(
        "--grad-checkpointing/--no-grad-checkpointing",
        "Trade compute for memory (visual encoder and temporal transformer).", PERFORMANCE)] = None,
    cache_in_memory: Annotated[str | None, option(
        "--cache-in-memory", "With --features: hold the training rows in memory (RAM, or GPU memory on CUDA) and "
        "batch by indexing, no workers: auto (when under half the free memory), on or off.", PERFORMANCE)] = None,
    **training: object,  # TRAINING_BLOCK
) -> None:
    """Train BIKE's Video branch (Video Concept Spotting + temporal transformer, Eq. 5-7).

    Multi-GPU / multi-node: `accelerate launch --multi_gpu --num_processes N -m bike_cli train-video ...`.
    """
    run_training_command("train-video", configs.TrainVideoConfig, {**locals(), **training})


def run_training_command(stage: str, config: type, params: dict[str, Any]) -> None:
    """What `train-video` and `train-attrs` do with their parameters: the settings (`make_config`: the recipe,
    then the options given), the stage with a progress bar of steps, the summary table (the main process only)."""
    cfg = make_config(config, given(params, "recipe", "training"), params["recipe"], stage, params)
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages import train_attrs, train_video

    run = {"train-video": train_video.run_train_video, "train-attrs": train_attrs.run_train_attrs}[stage]
    summary = core.run_guarded(run, cfg, lambda: RichProgress("steps"))
    if summary.is_main:
        tables.print_train_summary(stage, summary)


@with_options(TRAINING_BLOCK)
@core.settings(configs.TrainAttrsConfig, model="the one that generated the attributes",
               pretrained="the one that generated the attributes", classes="the names the attributes file records")
def train_attrs(
    attributes: Annotated[Path | None, option(
        "--attributes", "Training attributes CSV from gen-attributes.", INPUT)] = None,
    val_attributes: Annotated[Path | None, option("--val-attributes", "Validation attributes CSV.", INPUT)] = None,
    classes: Classes = None,
    base_classes: BaseClasses = None,
    recipe: Recipe = None,
    model: Model = None,
    pretrained: Pretrained = None,
    quick_gelu: QuickGelu = None,
    allow_model_mismatch: AllowModelMismatch = None,
    tune: Annotated[str | None, option(
        "--tune", "head: frozen text encoder + MLPs (cheap; the authors' code); full: the text encoder fine-tuned "
        "(Table 6e).", MODEL)] = None,
    templates: Templates = None,
    class_texts: ClassTexts = None,
    out: Path | None = out_option("Run folder: config.yaml, metrics.jsonl, best.pt, last.pt, checkpoints/."),
    **training: object,  # TRAINING_BLOCK
) -> None:
    """Train BIKE's Attributes branch: attribute sentences -> class prompts (Eq. 8).

    Multi-GPU / multi-node: `accelerate launch --multi_gpu --num_processes N -m bike_cli train-attrs ...`.
    """
    run_training_command("train-attrs", configs.TrainAttrsConfig, {**locals(), **training})


@core.settings(configs.MergeConfig, pretrained="the file the run records")
def merge(
    run: Path = typer.Argument(..., help="A train-video run trained end to end (--videos): its folder (best.pt, "
                               "else last.pt) or a checkpoint file (last.pt, averaged.pt...)."),
    alpha: float = typer.Option(..., "--alpha", rich_help_panel=MODEL,
                                help="Weight of the fine-tuned visual encoder, in [0, 1]: 0 is the original "
                                "CLIP's, 1 the run's, 0.5 their mean (WiSE-FT's usual choice)."),
    out: Path = out_option("Merged checkpoint to write (eval and predict read it as --checkpoint).",
                             required=True),
    pretrained: Annotated[str | None, option(
        "--pretrained", "The CLIP weights file the run was trained from, where it is now (it must be the same "
        "file: sha256).", MODEL)] = None,
    overwrite: Annotated[bool | None, option("--overwrite", "Replace an existing --out file.", OUTPUT)] = None,
) -> None:
    """Interpolate a fine-tuned visual encoder with the CLIP it started from (WiSE-FT, Open-VCLIP).

    visual = (1 - alpha) x original + alpha x fine-tuned, tensor by tensor. The temporal transformer,
    the head and the logit scale are kept from the run; the text encoder is CLIP's own (train-video
    never trains it).
    """
    cfg = make_config(configs.MergeConfig, given(locals()))
    from bike_cli.stages.merge import run_merge

    summary = core.run_guarded(run_merge, cfg)
    core.console.print(f"merge: wrote {summary.out}: {summary.interpolated} visual tensors of {summary.source} "
                  f"interpolated with {summary.clip} at alpha {summary.alpha:g}; {summary.kept} kept from the run "
                  "(temporal transformer, head, logit scale)", highlight=False, soft_wrap=True)


@core.settings(configs.EvalConfig, variadic=("--split-lists",), classes="the checkpoint's, else the cache's",
               model="zero-shot: the cache's",
               pretrained="zero-shot: the cache's; with --checkpoint: its CLIP weights file where it is now, "
               "if it moved",
               frames="the checkpoint's, else the cache's, else 8", views="the cache's",
               vcs_tokens="words zero-shot; all with an authors' checkpoint", head="vcs; a checkpoint's own",
               templates="'This is a video about {}'; a checkpoint's own")
def evaluate(
    out: Path = out_option("Folder for video_scores.csv, attrs_scores.csv, fused_scores.csv and metrics.json.",
                             required=True),
    checkpoint: Annotated[Path | None, option(
        "--checkpoint", "Video-branch run folder (best.pt) or checkpoint file, bike's or the authors' released one "
        "(then give --model and --frames). Without it: zero-shot CLIP.", MODEL)] = None,
    features: Annotated[Path | None, option(
        "--features", "Test feature cache (its views are all scored).", INPUT)] = None,
    videos: Annotated[Path | None, option("--videos", "Test video list (decoded here with --views).", INPUT)] = None,
    root: Root = None,
    classes: Classes = None,
    attributes: Annotated[Path | None, option(
        "--attributes", "Attributes CSV of the test videos (adds the Attributes branch).", INPUT)] = None,
    attrs_checkpoint: Annotated[Path | None, option(
        "--attrs-checkpoint", "train-attrs run folder or checkpoint; without it the Attributes branch is the "
        "zero-training one.", MODEL)] = None,
    model: Model = None,
    pretrained: Pretrained = None,
    quick_gelu: QuickGelu = None,
    head: Head = None,
    vcs_tokens: VcsTokens = None,
    templates: Templates = None,
    class_texts: ClassTexts = None,
    frames: Frames = None,
    views: Views = None,
    fuse: Annotated[float | None, option(
        "--fuse", "lambda of S = lambda*S_V + (1-lambda)*S_A, e.g. 0.6.", OUTPUT)] = None,
    protocol: Annotated[str | None, option(
        "--protocol", "full, zero-shot-half (seeded half-class draws), k600-splits, splits (the official test "
        "splits of --split-lists, all classes: mean and std) or base-novel (base and novel accuracy, each among "
        "its own classes, and their harmonic mean).", OUTPUT)] = None,
    base_classes: Annotated[Path | None, option(
        "--base-classes", "base-novel: the base classes' class file (matched by name to the scored classes).",
        OUTPUT)] = None,
    novel_classes: Annotated[Path | None, option(
        "--novel-classes", "base-novel: the novel classes' class file.", OUTPUT)] = None,
    novel_features: Annotated[Path | None, option(
        "--novel-features", "base-novel: the novel classes' test cache when it is not --features (whose labels then "
        "index --base-classes, this one's --novel-classes: ViFi-CLIP's base_val / novel_val).", INPUT)] = None,
    novel_videos: Annotated[Path | None, option(
        "--novel-videos", "base-novel: the novel classes' test video list (labels indexing --novel-classes).",
        INPUT)] = None,
    split_lists: Annotated[list[str] | None, option(
        "--split-lists", "--protocol splits: the test-split lists, one or more after the flag (--split-lists A B "
        "C): video lists (UCF-101's testlist0N.txt, ViFi-CLIP's val1.txt, any list bike reads) or HMDB-51's "
        "<class>_test_split<N>.txt files (a folder, a quoted glob or the files: one list per N). Listed videos "
        "are the cache's of the same id, else of the same file stem.", OUTPUT)] = None,
    repeats: Annotated[int | None, option("--repeats", "Repetitions of zero-shot-half.", OUTPUT)] = None,
    seed: Seed = None,
    plots: Annotated[Path | None, option(
        "--plots", "Folder for PNG plots: per-class accuracy and the fusion-weight curve.", OUTPUT)] = None,
    batch_size: BatchSize = None,
    workers: Annotated[int | None, option(
        "--workers", "DataLoader worker processes that decode --videos (0 = decode in the main process); a "
        "feature cache is read in large slabs in the main process.", PERFORMANCE)] = None,
    device: Device = None,
    compat: Compat = None,
    ignore_visual_weights: IgnoreVisualWeights = None,
    allow_model_mismatch: AllowModelMismatch = None,
) -> None:
    """Score a test set with the Video branch (and the Attributes branch), fuse them and report metrics.

    Views are scored as softmax(scale x logits) and averaged per video. Zero-shot (no --checkpoint)
    from a cache uses the cache's model, weights and frame count unless told otherwise.
    """
    cfg = make_config(configs.EvalConfig, given(locals()))
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.evaluate import run_eval

    tables.print_eval(core.run_guarded(run_eval, cfg, RichProgress("videos")))


@core.settings(configs.FuseConfig, weights="equal weights", repeats="10", seed="0",
               splits="k600_split1,k600_split2,k600_split3")
def fuse(
    inputs: list[Path] = typer.Argument(..., help="Score CSVs to fuse (two or more, e.g. Video then Attributes "
                                        "branch): the same videos (any row order) and the same classes (columns "
                                        "are matched by class name)."),
    out: Path = out_option("Fused score CSV to write; its metrics go to OUT stem + .metrics.json beside it.",
                             required=True),
    weights: Annotated[str | None, option(
        "--weights", "One weight per input, comma-separated, summing to 1: '0.6,0.4' is Eq. 4 with lambda 0.6.",
        MODEL)] = None,
    search: Annotated[bool | None, option(
        "--search", "Choose the weights on --val files: the best top-1 (mAP for multi-label files) over a grid.",
        MODEL)] = None,
    val: Annotated[list[Path] | None, option(
        "--val", "Validation score CSV for --search, one per input in the same order: repeat the option "
        "(--val A_val.csv --val B_val.csv).", INPUT)] = None,
    grid_step: Annotated[float | None, option(
        "--grid-step", "Step of the --search grid over the weights (must divide 1).", MODEL)] = None,
    protocol: Annotated[str | None, option(
        "--protocol", "Evaluation protocol of the inputs and the result: full, zero-shot-half or k600-splits.",
        OUTPUT)] = None,
    repeats: Annotated[int | None, option("--repeats", "zero-shot-half: random halves of the classes.", OUTPUT)] = None,
    seed: Seed = None,
    splits: Annotated[str | None, option(
        "--splits", "k600-splits: comma-separated class lists (lexicon names or files).", OUTPUT)] = None,
    compat: Compat = None,
) -> None:
    """Fuse branch scores linearly, S = sum_i w_i S_i (the paper's Eq. 4: lambda S_V + (1 - lambda) S_A).

    Scores are added as they are (no softmax): give all inputs on the same scale, e.g. the softmax
    probabilities the Video branch writes. Metrics of each input and of the result are printed and
    written to the metrics JSON.
    """
    options = {"repeats": repeats, "seed": seed, "splits": splits.split(",") if splits else None}
    parsed = core.run_guarded(configs.parse_weights, weights) if weights is not None else None
    cfg = make_config(configs.FuseConfig, {
        "inputs": list(inputs), "out": out, "weights": parsed, "val": list(val or []),
        "protocol_options": given(options),
        **given({"search": search, "grid_step": grid_step, "protocol": protocol, "compat": compat}),
    })
    from bike_cli.stages.fuse import run_fuse

    tables.print_fuse(core.run_guarded(run_fuse, cfg))


@core.settings(configs.PredictConfig, frames="the checkpoint's, else 8",
               lexicon="k400 when available; none: no attributes", head="vcs; a checkpoint's own",
               vcs_tokens="words; a checkpoint's own")
def predict(
    videos: list[Path] = typer.Argument(..., help="Video files to recognise."),
    checkpoint: Annotated[Path | None, option(
        "--checkpoint", "A Video-branch run folder (best.pt, else last.pt) or checkpoint file from train-video, or an "
        "authors' released checkpoint (then give --model, --frames and the classes).", MODEL)] = None,
    model: Model = None,
    pretrained: Pretrained = None,
    quick_gelu: QuickGelu = None,
    head: Head = None,
    vcs_tokens: VcsTokens = None,
    class_texts: ClassTexts = None,
    classes: Classes = None,
    class_names: Annotated[str | None, option(
        "--class-names", "Zero-shot: class names as free text, comma-separated: 'a,b,c'.", INPUT)] = None,
    lexicon: Lexicon = None,
    frames: Frames = None,
    decoder: Decoder = None,
    top_k: TopK = None,
    top: Annotated[int | None, option(
        "--top", "Classes reported per video (the JSON key stays 'top5').", OUTPUT)] = None,
    as_json: Annotated[bool, option(
        "--json", "Print one JSON document to stdout instead of tables (logs stay on stderr).", OUTPUT)] = False,
    explain: Annotated[Path | None, option(
        "--explain", "Draw the paper's Fig. 3 (frames, saliency, attributes) into this image, one row per video "
        "(.png, .pdf, .svg...).", OUTPUT)] = None,
    skip_bad: Annotated[bool | None, option(
        "--skip-bad", "Skip unreadable videos with a message instead of stopping (exit 1) at the first one.",
        INPUT)] = None,
    device: Device = None,
    compat: Compat = None,
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
        options["class_names"] = core.run_guarded(configs.parse_class_names, class_names)
    cfg = make_config(configs.PredictConfig, options)
    from bike_cli.stages.predict import run_predict

    result = core.run_guarded(run_predict, cfg)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        tables.print_predict(result)
    if result.explain is not None:
        core.console.print(f"explanation written to {result.explain}", highlight=False)


@core.settings(configs.SearchConfig, model="the cache's", pretrained="the cache's", quick_gelu="the cache's")
def search(
    queries: list[str] | None = typer.Argument(None, help="Texts to search for, e.g. \"flipping a pancake\"."),
    features: Annotated[Path, option("--features", "Feature cache (HDF5) written by extract-features.", INPUT)] = ...,
    queries_file: Annotated[Path | None, option("--queries", "A file of queries, one a line.", INPUT)] = None,
    root: Annotated[Path | None, option(
        "--root", "Folder the cache's video ids are paths under (for the `path` column and --sheet).", INPUT)] = None,
    model: Model = None,
    pretrained: Pretrained = None,
    quick_gelu: QuickGelu = None,
    template: Annotated[str | None, option(
        "--template", "Wraps each query, {} for its text (default: the text as typed).", MODEL)] = None,
    class_texts: ClassTexts = None,
    allow_model_mismatch: AllowModelMismatch = None,
    rule: Annotated[str | None, option(
        "--rule", "vcs (Video Concept Spotting, Eq. 5-6, the query's words pick the frames) or mean "
        "(cosine of the mean-pooled video).", OUTPUT)] = None,
    top: Annotated[int | None, option("--top", "Videos reported per query.", OUTPUT)] = None,
    candidates: Annotated[int | None, option(
        "--candidates", "Videos the index pre-selects per query for the VCS rule.", PERFORMANCE)] = None,
    out: Path | None = out_option("Hits CSV (rank, video, score, salient frame), with its .meta.json sidecar."),
    sheet: Annotated[Path | None, option(
        "--sheet", "Draw a contact sheet (.png...): a row per query, its top videos' most salient frames.",
        OUTPUT)] = None,
    evaluate: Annotated[bool | None, option(
        "--eval", "Use the cache's class names as queries: per class AP and recall@1/5/10, both rules.",
        OUTPUT)] = None,
    as_json: Annotated[bool, option(
        "--json", "Print one JSON document to stdout instead of tables (logs stay on stderr).", OUTPUT)] = False,
    device: Device = None,
) -> None:
    """Find the videos of a feature cache that match texts, and the moment in each.

    Queries are encoded with the cache's own CLIP. A search index (mean-pooled video vectors, kept
    beside the cache as CACHE.h5.search-index.h5 and rebuilt when the cache changes) pre-selects
    --candidates videos per query with one matrix product; the VCS rule then scores those.
    """
    options = given(locals(), "as_json")
    options["queries"] = list(queries or [])
    cfg = make_config(configs.SearchConfig, options)
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.search import run_search

    result = core.run_guarded(run_search, cfg, RichProgress("videos"))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        tables.print_search(result)


@core.settings(configs.DemoConfig)
def demo(
    out: Path | None = out_option("Folder for the generated videos and every stage's outputs."),
    model: Model = None,
    pretrained: Pretrained = None,
    videos_per_class: Annotated[int | None, option(
        "--videos-per-class", "Generated videos per class (a third go to validation).", INPUT)] = None,
    frames: Frames = None,
    seed: Seed = None,
    workers: Workers = None,
) -> None:
    """Generate a small labelled video dataset and run bike's stages on it with the built-in tiny model.

    Stages: extract-features (train split 1x1 view, val split 2x3 views); train-video (VCS head and
    temporal transformer) validated on every view; gen-attributes with a small lexicon of shapes,
    colours and motions (and the zero-training S_A scores); train-attrs; eval of both branches with
    fusion; predict with an explain image; search the val cache for one text (its top 3). Re-running reuses what is already there.
    """
    cfg = make_config(configs.DemoConfig, given(locals()))
    from bike_cli.cli.progress import RichProgress
    from bike_cli.stages.demo import run_demo

    tables.print_demo(core.run_guarded(run_demo, cfg, lambda: RichProgress("videos")))


COMMANDS = (  # the order of `bike --help`: the order the stages run in
    ("extract-features", extract_features), ("gen-attributes", gen_attributes), ("train-video", train_video),
    ("train-attrs", train_attrs), ("merge", merge), ("eval", evaluate), ("fuse", fuse), ("predict", predict),
    ("search", search), ("demo", demo),
)


class CheckedCommand(core.BikeCommand):
    """A stage command that first checks the installed torch and torchvision belong together: a
    mismatched pair is one line with the fix and exit 1, before torch is imported."""

    def invoke(self, ctx: typer.Context) -> Any:
        problem = installed_mismatch()
        if problem:
            core.fail(problem)
        return super().invoke(ctx)


for _name, _command in COMMANDS:
    app.command(_name, cls=CheckedCommand)(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="bike")
