"""The settings of every stage: one dataclass per command (no torch: `--help` reads the defaults here), a
field named as its option (`batch_size`: `--batch-size`), a number's range beside it; list options' parsers."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from pathlib import Path

from bike_cli.config.profile import PAPER_READING
from bike_cli.config.ranges import MAX_FRAMES, MAX_SEED, ranged
from bike_cli.errors import InputError

DEFAULT_TEMPLATE = "This is a video about {}"  # class / attribute-sentence prompt: `{}` is the class or the attributes
DEFAULT_DECODER = "pyav"  # one of bike_cli.data.decoding.read.DECODERS
# RECIPE_ORIGINS: the `origins` field is where each value came from (config.recipe.ORIGINS); it is not a
# setting (not in config.yaml, not compared on --resume).


@dataclass
class ExtractConfig:
    """Options of `bike extract-features` (see its --help)."""

    list_path: Path
    out: Path
    model: str = "bike-tiny"
    pretrained: str = "none"
    root: Path | None = None
    classes: Path | None = None
    frames: int = ranged(8, min=1, max=MAX_FRAMES)
    views: str = "1x1"
    sampling: str = "test"
    seed: int = ranged(0, min=0, max=MAX_SEED)
    failures: Path | None = None
    decoder: str = DEFAULT_DECODER
    batch_size: int = ranged(16, min=1)
    workers: int = ranged(2, min=0)
    strict: bool = False
    overwrite: bool = False
    quick_gelu: bool | None = None
    device: str | None = None
    precision: str = "auto"
    compat: str = PAPER_READING  # bike | authors: the authors' frame indices and test transform

    @property
    def failures_path(self) -> Path:
        """--failures, else `OUT.failures.csv` beside the cache."""
        return self.failures or self.out.with_name(self.out.stem + ".failures.csv")


@dataclass
class GenAttributesConfig:
    """Options of `bike gen-attributes` (see its --help)."""

    features: Path
    lexicon: str
    out: Path
    model: str | None = None  # default: the cache's
    pretrained: str | None = None  # default: the cache's
    quick_gelu: bool | None = None  # default: the cache's when the model is the cache's, else auto
    top_k: int = ranged(5, min=1)
    prompt: str = "{}"  # applied to each phrase before encoding
    sentence_template: str = DEFAULT_TEMPLATE
    separator: str = ","
    class_prompt: str = DEFAULT_TEMPLATE
    drop_own_class: bool = False
    per_view: bool = False
    chunk_size: int = ranged(4096, min=1)  # rows (videos, or video views) per matrix product
    max_elements: int = ranged(1 << 25, min=1)  # bound on a similarity block (rows x phrases) and a feature read
    classes: Path | None = None
    scores: Path | None = None
    phrase_cache: Path | None = None
    device: str | None = None
    text_batch_size: int = ranged(256, min=1)
    allow_model_mismatch: bool = False  # a text encoder other than the cache's model: warn instead of refusing

    @property
    def phrase_cache_path(self) -> Path:
        """--phrase-cache, else `OUT.phrases.pt` beside the attributes CSV."""
        return self.phrase_cache or self.out.with_name(self.out.stem + ".phrases.pt")


@dataclass
class TrainVideoConfig:
    """Every setting of a Video-branch training run (the paper's defaults for K400 ViT-B/32 8f)."""

    # data: a feature cache (backbone frozen) or a video list (end to end)
    features: Path | None = None  # train feature cache from extract-features
    videos: Path | None = None  # train video list (end-to-end fine-tuning)
    root: Path | None = None  # folder that relative paths of the train list start from
    classes: Path | None = None  # class-name file
    base_classes: Path | None = None  # base-to-novel: train on these classes only (bike_cli.data.class_names)
    val_features: Path | None = None
    val_videos: Path | None = None
    val_root: Path | None = None
    out: Path = Path("runs/video")
    # model
    model: str | None = None  # open_clip name; from a cache: the cache's model [default]
    pretrained: str | None = None  # tag, checkpoint file or none; from a cache: the cache's weights
    init_from: Path | None = None  # start from a trained Video branch (bike run folder / best.pt)
    quick_gelu: bool | None = None
    allow_model_mismatch: bool = False  # train on a cache made by another CLIP than --pretrained (warn only)
    frames: int = ranged(8, min=1, max=MAX_FRAMES)  # T frames per clip
    head: str = "vcs"  # mean | vcs
    temporal: str = "transformer"  # none | transformer
    temporal_layers: int = ranged(6, min=1)
    vcs_tokens: str | None = None  # words (Eq. 5) | all (the authors' code) [default: words; all under
    # --compat authors with an authors' --init-from checkpoint]
    tau: float = ranged(0.01, above=0)  # VCS softmax temperature
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])
    class_texts: Path | None = None  # class-texts file: several descriptions per class (docs/formats.md)
    # optimisation
    epochs: int = ranged(30, min=1)
    batch_size: int = ranged(256, min=1)  # per optimiser step, over all processes (before gradient accumulation)
    grad_accum: int = ranged(1, min=1)
    lr: float = ranged(5e-5, above=0)  # new layers (temporal transformer, logit scale)
    clip_lr_ratio: float = ranged(0.1, min=0)  # CLIP visual encoder lr = lr x ratio (end-to-end mode)
    weight_decay: float = ranged(0.2, min=0)
    warmup_epochs: float = ranged(5.0, min=0)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (mixed precision on GPU)
    grad_checkpointing: bool = False
    # augmentation of end-to-end training (the paper's: random resized crop, flip, grayscale)
    crop_scale_min: float = ranged(0.08, above=0, max=1)
    flip_prob: float = ranged(0.5, min=0, max=1)
    grayscale_prob: float = ranged(0.2, min=0, max=1)
    # run
    seed: int = ranged(0, min=0, max=MAX_SEED)
    shots: int | None = ranged(None, min=1)  # few-shot: K training videos per class, a seeded sample
    shots_list: Path | None = None  # few-shot: exactly the videos of a published K-shot list
    samples_per_epoch: int | None = ranged(None, min=1)  # cycle the training set to this many samples per epoch
    val_every: int = ranged(1, min=1)  # validate every N epochs
    average_last: int | None = ranged(None, min=1)  # N: also write averaged.pt, the mean of the last N epochs' weights
    workers: int = ranged(2, min=0)
    device: str | None = None  # cpu | cuda [default: the GPU when there is one, else cpu]
    cache_in_memory: str = "auto"  # --features: hold the rows in RAM / GPU memory: auto | on | off
    resume: bool = False
    # reproduction (bike_cli.config.profile, docs/reproducing.md)
    compat: str = "bike"  # bike | authors: their optimiser groups, scheduler steps, no logit-scale clamp
    loss: str | None = None  # bike (Eq. 7) | authors (their KL loss) [default: the profile's]
    ignore_visual_weights: bool = False  # --init-from a checkpoint whose visual encoder did not make the cache
    overwrite: bool = False  # discard a run already in `out` (checkpoints, metrics, config)
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)  # not a setting: RECIPE_ORIGINS


@dataclass
class TrainAttrsConfig:
    """Every setting of an Attributes-branch training run (Sec. 2.2, Eq. 8)."""

    attributes: Path | None = None  # train attributes CSV from gen-attributes
    val_attributes: Path | None = None
    classes: Path | None = None  # class-name file [default: the names the attributes file records]
    base_classes: Path | None = None  # base-to-novel: train on these classes only (bike_cli.data.class_names)
    out: Path = Path("runs/attrs")
    model: str | None = None  # text encoder's CLIP [default: the one that generated the attributes]
    pretrained: str | None = None
    quick_gelu: bool | None = None
    allow_model_mismatch: bool = False  # a --model other than the one that generated the attributes (warn only)
    tune: str = "head"  # head (frozen encoder + MLPs, the authors' code) | full (Table 6e: fine-tuned)
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])  # class prompts
    class_texts: Path | None = None  # class-texts file: several descriptions per class (docs/formats.md)
    epochs: int = ranged(30, min=1)
    batch_size: int = ranged(256, min=1)
    grad_accum: int = ranged(1, min=1)
    lr: float = ranged(5e-5, above=0)  # new layers (MLPs, logit scale)
    clip_lr_ratio: float = ranged(0.1, min=0)  # the fine-tuned text encoder (--tune full)
    weight_decay: float = ranged(0.2, min=0)
    warmup_epochs: float = ranged(5.0, min=0)
    precision: str = "auto"
    seed: int = ranged(0, min=0, max=MAX_SEED)
    val_every: int = ranged(1, min=1)
    workers: int = ranged(0, min=0)  # samples are embeddings or token rows in memory: workers rarely help
    device: str | None = None  # cpu | cuda [default: the GPU when there is one, else cpu]
    resume: bool = False
    compat: str = "bike"  # bike | authors: their optimiser groups, scheduler steps, no logit-scale clamp
    loss: str | None = None  # bike (Eq. 8) | authors (their KL loss) [default: the profile's]
    overwrite: bool = False  # discard a run already in `out` (checkpoints, metrics, config)
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)  # not a setting: RECIPE_ORIGINS


@dataclass
class MergeConfig:
    """Options of `bike merge` (see its --help)."""

    run: Path  # an end-to-end train-video run folder or checkpoint
    out: Path  # the merged checkpoint to write
    alpha: float = ranged(MISSING, min=0, max=1)  # 0: the original CLIP's visual weights, 1: the run's fine-tuned ones
    pretrained: str | None = None  # the run's CLIP weights file where it is now (sha256-checked)
    overwrite: bool = False  # replace an existing --out


@dataclass
class EvalConfig:
    """Options of `bike eval` (see its --help)."""

    out: Path
    checkpoint: Path | None = None  # Video-branch run folder or checkpoint; None = zero-shot CLIP
    features: Path | None = None
    videos: Path | None = None
    root: Path | None = None
    classes: Path | None = None
    views: str | None = None  # CxS for --videos; with --features the cache's views (must match if given)
    attributes: Path | None = None
    attrs_checkpoint: Path | None = None
    fuse: float | None = ranged(None, min=0, max=1)  # lambda of Eq. 4
    protocol: str = "full"
    repeats: int = ranged(10, min=1)
    seed: int = ranged(0, min=0, max=MAX_SEED)
    splits: list[str] = field(default_factory=list)
    base_classes: Path | None = None  # --protocol base-novel: the base classes' class file
    novel_classes: Path | None = None  # --protocol base-novel: the novel classes' class file
    novel_features: Path | None = None  # base-novel: the novel classes' videos in a cache of their own
    novel_videos: Path | None = None  # base-novel: ... or in a video list of their own
    split_lists: list[str] = field(default_factory=list)  # --protocol splits: test-split video lists
    # zero-shot model (without --checkpoint)
    model: str | None = None
    pretrained: str | None = None
    quick_gelu: bool | None = None
    # a bike --checkpoint fixes model, quick_gelu, head, vcs_tokens and templates: given, they must be its own
    head: str | None = None  # zero-shot: vcs [default]; a checkpoint's own
    vcs_tokens: str | None = None  # zero-shot: words [default]; an authors' checkpoint: all [default]
    templates: list[str] | None = None  # zero-shot: [DEFAULT_TEMPLATE]; a checkpoint's own
    class_texts: Path | None = None  # class-texts file: several descriptions per class (docs/formats.md)
    frames: int | None = ranged(None, min=1, max=MAX_FRAMES)  # default: the checkpoint's, else the cache's, else 8
    batch_size: int = ranged(64, min=1)
    workers: int = ranged(2, min=0)
    device: str | None = None
    plots: Path | None = None  # folder for per-class accuracy and fusion-curve PNGs
    compat: str = PAPER_READING  # bike | authors (bike_cli.config.profile): the authors' view rule, fusion, sampling
    ignore_visual_weights: bool = False  # use a cache made by another visual encoder than the checkpoint's
    allow_model_mismatch: bool = False  # a checkpoint or model other than the cache's: warn instead of refusing


@dataclass
class FuseConfig:
    """Options of `bike fuse` (see its --help)."""

    inputs: list[Path]
    out: Path
    weights: list[float] | None = None
    search: bool = False
    val: list[Path] = field(default_factory=list)
    grid_step: float = ranged(0.05, above=0, max=1)
    protocol: str = "full"
    protocol_options: dict = field(default_factory=dict)
    compat: str = PAPER_READING  # bike | authors: inputs must be of this profile; authors' default weights 0.7 / 0.3

    def __post_init__(self) -> None:
        self.inputs, self.val, self.out = [Path(p) for p in self.inputs], [Path(p) for p in self.val], Path(self.out)

    @property
    def metrics_json(self) -> Path:
        """The metrics JSON written beside --out."""
        return self.out.with_name(self.out.stem + ".metrics.json")


def parse_weights(text: str) -> list[float]:
    """`0.6,0.4` -> [0.6, 0.4]; InputError naming the bad item."""
    weights = []
    for item in text.split(","):
        try:
            weights.append(float(item))
        except ValueError:
            raise InputError(f"--weights {text!r}: {item.strip()!r} is not a number") from None
    return weights


@dataclass
class PredictConfig:
    """Options of `bike predict` (see its --help)."""

    videos: list[Path]
    checkpoint: Path | None = None  # bike Video-branch run folder or .pt
    model: str | None = None  # zero-shot: open_clip architecture
    pretrained: str | None = None  # zero-shot: tag, file or none; with a checkpoint: the moved weights file
    quick_gelu: bool | None = None  # zero-shot only
    classes: Path | None = None  # zero-shot: class-name file
    class_names: list[str] | None = None  # zero-shot: free-text class names
    frames: int | None = ranged(None, min=1, max=MAX_FRAMES)  # default: the checkpoint's, else bike_cli.models.factory.ZERO_SHOT_FRAMES
    head: str | None = None  # zero-shot: mean | vcs (default vcs); must match a checkpoint's
    vcs_tokens: str | None = None  # zero-shot: words | all (default words); must match a checkpoint's
    class_texts: Path | None = None  # class-texts file: several descriptions per class (docs/formats.md)
    lexicon: str | None = None  # None: DEFAULT_LEXICON when available; NO_LEXICON: no attributes
    top_k: int = ranged(5, min=1)  # attributes per video
    top: int = ranged(5, min=1)  # classes reported per video
    explain: Path | None = None  # figure to draw (report.figures.draw_explanation)
    skip_bad: bool = False
    decoder: str = DEFAULT_DECODER
    device: str | None = None
    compat: str = PAPER_READING  # bike | authors (bike_cli.config.profile): test sampling, transform and view rule


def parse_class_names(text: str) -> list[str]:
    """Free-text class names "a,b,c" -> ["a", "b", "c"] (stripped; empty or repeated names are errors)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise InputError(f"--class-names {text!r} has an empty name (two commas in a row, or a trailing comma?)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--class-names {text!r} repeats {', '.join(repeated)}")
    return names


@dataclass
class SearchConfig:
    """Options of `bike search` (see its --help)."""

    features: Path
    queries: list[str] = field(default_factory=list)
    queries_file: Path | None = None  # one query a line
    model: str | None = None  # default: the cache's
    pretrained: str | None = None  # default: the cache's
    quick_gelu: bool | None = None
    template: str = "{}"
    class_texts: Path | None = None  # --eval: the classes' descriptions as queries (docs/formats.md)
    rule: str = "vcs"
    top: int = ranged(10, min=1)
    candidates: int = ranged(1000, at_least="top")
    root: Path | None = None  # the folder video ids are paths under (for `path` and the sheet)
    out: Path | None = None  # hits CSV
    sheet: Path | None = None  # contact sheet image
    evaluate: bool = False
    device: str | None = None
    allow_model_mismatch: bool = False


@dataclass
class DemoConfig:
    """Options of `bike demo` (see its --help)."""

    out: Path = Path("bike-demo")
    model: str = "bike-tiny"
    pretrained: str = "none"
    videos_per_class: int = ranged(12, min=3)  # a third go to validation
    frames: int = ranged(8, min=1, max=MAX_FRAMES)
    seed: int = ranged(0, min=0, max=MAX_SEED)
    workers: int = ranged(2, min=0)
