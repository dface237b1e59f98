"""The one builder of branch modules, from specs that checkpoints store as `model_args`.

A `VideoBranchSpec` / `AttrsBranchSpec` holds everything that rebuilds a branch: which CLIP (model
name, weights, QuickGELU: what `load_clip` takes) and the branch's own settings (head, temporal
module, VCS tokens, tau, prompt templates, tune mode, ...) and how it trains: its loss (a `--loss`
name) and the cap on its log-space logit scale (None: uncapped). `build_video_branch` and
`build_attrs_branch` turn a spec and the loaded CLIP into the module; train-video, train-attrs,
and the loader of trained branches (`bike_cli.models.factory`) build through them.

Checkpoints of schema 1 (before `model_args`) get their spec derived from what they store: the
resolved training settings (`config`) and the CLIP record (`clip`); checkpoints that record no loss or
cap rebuild with bike's own (`bike`, CLIP's cap), what every branch was built with before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from torch import nn

from bike_cli.config.stages import DEFAULT_TEMPLATE
from bike_cli.errors import InputError
from bike_cli.io.checkpoints import BranchCheckpoint
from bike_cli.models.attrs_branch import TUNES, AttributesBranch, TextTower
from bike_cli.models.authors import training_loss
from bike_cli.models.clip_spec import ClipSpec
from bike_cli.models.heads import DEFAULT_TAU, VideoHead
from bike_cli.models.loss import MAX_LOG_SCALE, LogitScale
from bike_cli.models.text_towers import text_width
from bike_cli.models.video_branch import VideoBranch

DEFAULT_MAX_FRAMES = 77  # rows of the temporal transformer's frame position table (as the authors')


@dataclass(frozen=True)
class VideoBranchSpec:
    """Everything that rebuilds a Video branch (`head.*`, `logit_scale.*`, `visual.*`)."""

    model_name: str  # open_clip architecture
    pretrained: str  # tag, 'none' or the weights file, as ClipSpec records it
    quick_gelu: bool | None
    embed_dim: int  # D of the joint embedding space
    head: str = "vcs"  # mean | vcs
    temporal: str = "none"  # none | transformer
    temporal_layers: int = 1
    temporal_heads: int | None = None  # None: CLIP's text width / 64, fixed when built (`resolve_video_spec`)
    max_frames: int = DEFAULT_MAX_FRAMES
    tau: float = DEFAULT_TAU  # VCS softmax temperature
    vcs_tokens: str = "words"  # words | all
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)  # class prompts
    frames: int = 8  # T frames per clip the branch was trained with
    loss: str = "bike"  # the training loss (`models.authors.LOSSES`)
    logit_scale_cap: float | None = MAX_LOG_SCALE  # None: uncapped (zero-shot scoring, the authors' training)

    @classmethod
    def of(cls, clip: ClipSpec, **settings) -> VideoBranchSpec:
        """The spec of a branch on the loaded CLIP `clip` with the given settings."""
        return _with_clip(cls, clip, settings)

    def to_dict(self) -> dict:
        """Plain containers, as a checkpoint stores them (`model_args`)."""
        return _plain(self)


@dataclass(frozen=True)
class AttrsBranchSpec:
    """Everything that rebuilds an Attributes branch (`sentence_fc.*`/`query_fc.*` or `text.*`)."""

    model_name: str
    pretrained: str
    quick_gelu: bool | None
    embed_dim: int
    tune: str = "head"  # head (MLPs on the frozen encoder) | full (the text encoder fine-tuned)
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)  # class prompts
    loss: str = "bike"  # the training loss (`models.authors.LOSSES`)
    logit_scale_cap: float | None = MAX_LOG_SCALE  # None: uncapped

    @classmethod
    def of(cls, clip: ClipSpec, **settings) -> AttrsBranchSpec:
        """The spec of a branch on the loaded CLIP `clip` with the given settings."""
        return _with_clip(cls, clip, settings)

    def to_dict(self) -> dict:
        """Plain containers, as a checkpoint stores them (`model_args`)."""
        return _plain(self)


def _with_clip(cls, clip: ClipSpec, settings: dict):
    if "templates" in settings:
        settings = {**settings, "templates": tuple(settings["templates"])}
    return cls(model_name=clip.model_name, pretrained=clip.pretrained, quick_gelu=clip.quick_gelu,
               embed_dim=clip.embed_dim, **settings)


def _plain(spec) -> dict:
    args = asdict(spec)
    args["templates"] = list(args["templates"])
    return args


def _from_args(cls, args: dict, source: object):
    """A spec from a checkpoint's `model_args`; InputError when they are not this spec's fields."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(args) - known)
    try:
        if unknown:
            raise TypeError(f"unknown fields {unknown}")
        spec = cls(**args)
    except TypeError as e:
        raise InputError(f"{source}: model_args do not describe a {cls.__name__}: {e}") from None
    return replace(spec, templates=tuple(spec.templates))


def _legacy_clip(ckpt: BranchCheckpoint) -> dict:
    clip = ckpt.clip
    return {"model_name": clip["model_name"], "pretrained": clip["pretrained"], "quick_gelu": clip["quick_gelu"],
            "embed_dim": int(clip["embed_dim"])}


def video_spec_of(ckpt: BranchCheckpoint, source: object) -> VideoBranchSpec:
    """The Video-branch spec of a checkpoint: its `model_args`, or (schema 1) derived from config + clip."""
    if ckpt.model_args is not None:
        return _from_args(VideoBranchSpec, ckpt.model_args, source)
    config = ckpt.config
    return VideoBranchSpec(**_legacy_clip(ckpt), head=config["head"], temporal=config["temporal"],
                           temporal_layers=int(config["temporal_layers"]), tau=float(config["tau"]),
                           vcs_tokens=config["vcs_tokens"], templates=tuple(config["templates"]),
                           frames=int(config["frames"]))


def attrs_spec_of(ckpt: BranchCheckpoint, source: object) -> AttrsBranchSpec:
    """The Attributes-branch spec of a checkpoint: its `model_args`, or (schema 1) derived from config + clip."""
    if ckpt.model_args is not None:
        return _from_args(AttrsBranchSpec, ckpt.model_args, source)
    config = ckpt.config
    return AttrsBranchSpec(**_legacy_clip(ckpt), tune=config["tune"], templates=tuple(config["templates"]))


def resolve_video_spec(spec: VideoBranchSpec, clip_model: nn.Module) -> VideoBranchSpec:
    """`spec` with the temporal transformer's head count fixed: CLIP's text width / 64 (as the authors')."""
    if spec.temporal_heads is not None:
        return spec
    return replace(spec, temporal_heads=max(1, text_width(clip_model) // 64))


def build_video_branch(spec: VideoBranchSpec, clip_model: nn.Module, *, with_visual: bool = False) -> VideoBranch:
    """The Video branch of `spec` on the loaded CLIP `clip_model` (its weights not yet loaded).

    The logit scale starts at CLIP's own, capped at the spec's cap; `with_visual` keeps CLIP's image
    tower in the branch (decoded videos, end-to-end training), else the branch scores cached frame
    embeddings [b, T, D]."""
    spec = resolve_video_spec(spec, clip_model)
    try:  # the head's settings come from the user (--head, --temporal, --tau, --frames ...) or a checkpoint
        head = VideoHead(spec.embed_dim, head=spec.head, temporal=spec.temporal, tau=spec.tau,
                         max_frames=spec.max_frames, layers=spec.temporal_layers, heads=spec.temporal_heads)
        head.check_frames(spec.frames)
    except ValueError as err:
        raise InputError(str(err)) from None
    visual = clip_model.visual if with_visual else None
    return VideoBranch(head, LogitScale.from_clip(clip_model, cap=spec.logit_scale_cap), visual,
                       training_loss(spec.loss))


def build_attrs_branch(spec: AttrsBranchSpec, clip_model: nn.Module) -> AttributesBranch:
    """The Attributes branch of `spec` on the loaded CLIP `clip_model` (`full`: a copy of its text tower)."""
    if spec.tune not in TUNES:
        raise InputError(f"--tune must be one of {', '.join(TUNES)}, not {spec.tune!r}")
    text = TextTower(clip_model) if spec.tune == "full" else None
    return AttributesBranch(spec.tune, spec.embed_dim, LogitScale.from_clip(clip_model, cap=spec.logit_scale_cap),
                            text, training_loss(spec.loss))

