"""The one builder of branch modules, from specs that checkpoints store as `model_args`: which CLIP, the settings,
the loss and logit-scale cap (`bike` and CLIP's where a checkpoint records neither). Bad settings: ValueError."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from torch import nn

from bike_cli.config.stages import DEFAULT_TEMPLATE
from bike_cli.models.attrs_branch import AttributesBranch, TextTower
from bike_cli.models.authors import training_loss
from bike_cli.models.clip import ClipSpec
from bike_cli.models.heads import DEFAULT_TAU, VideoHead
from bike_cli.models.loss import MAX_LOG_SCALE, LogitScale
from bike_cli.models.text_towers import text_width
from bike_cli.models.video_branch import VideoBranch

ClassTextsRecord = tuple[tuple[str, tuple[str, ...]], ...]  # ((class name, (description, ...)), ...)
DEFAULT_MAX_FRAMES = 77  # rows of the temporal transformer's frame position table (as the authors')


@dataclass(frozen=True)
class BranchSpec:
    """What both branch specs share: which CLIP (what `load_clip` takes); stored as plain containers."""

    model_name: str  # open_clip architecture
    pretrained: str  # tag, 'none' or the weights file, as ClipSpec records it
    quick_gelu: bool | None
    embed_dim: int  # D of the joint embedding space

    @classmethod
    def of(cls, clip: ClipSpec, **settings):
        """The spec of a branch on the loaded CLIP `clip` with the given settings."""
        return cls(model_name=clip.model_name, pretrained=clip.pretrained, quick_gelu=clip.quick_gelu,
                   embed_dim=clip.embed_dim, **frozen_settings(settings))

    def to_dict(self) -> dict:
        """Plain containers, as a checkpoint stores them (`model_args`)."""
        args = asdict(self)
        args["templates"] = list(args["templates"])
        if args["class_texts"] is None:
            del args["class_texts"]  # what a run without --class-texts stored before the field existed
        else:
            args["class_texts"] = {name: list(descriptions) for name, descriptions in self.class_texts}
        return args


@dataclass(frozen=True)
class VideoBranchSpec(BranchSpec):
    """Everything that rebuilds a Video branch (`head.*`, `logit_scale.*`, `visual.*`)."""

    head: str = "vcs"  # mean | vcs
    temporal: str = "none"  # none | transformer
    temporal_layers: int = 1
    temporal_heads: int | None = None  # None: CLIP's text width / 64, fixed when built (`resolve_video_spec`)
    max_frames: int = DEFAULT_MAX_FRAMES
    tau: float = DEFAULT_TAU  # VCS softmax temperature
    vcs_tokens: str = "words"  # words | all
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)  # class prompts
    class_texts: ClassTextsRecord | None = None  # --class-texts: per class its descriptions; None: the names
    frames: int = 8  # T frames per clip the branch was trained with
    loss: str = "bike"  # the training loss (`models.authors.LOSSES`)
    logit_scale_cap: float | None = MAX_LOG_SCALE  # None: uncapped (zero-shot scoring, the authors' training)


@dataclass(frozen=True)
class AttrsBranchSpec(BranchSpec):
    """Everything that rebuilds an Attributes branch (`sentence_fc.*`/`query_fc.*` or `text.*`)."""

    tune: str = "head"  # head (MLPs on the frozen encoder) | full (the text encoder fine-tuned)
    templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)  # class prompts
    class_texts: ClassTextsRecord | None = None  # --class-texts: per class its descriptions; None: the names
    loss: str = "bike"  # the training loss (`models.authors.LOSSES`)
    logit_scale_cap: float | None = MAX_LOG_SCALE  # None: uncapped


def frozen_settings(settings: dict) -> dict:
    """`settings` with templates and class texts as the spec holds them (tuples): `class_texts` from a
    {class: [description, ...]} mapping (as `model_args` store it) or (class, descriptions) pairs."""
    if "templates" in settings:
        settings = {**settings, "templates": tuple(settings["templates"])}
    texts = settings.get("class_texts")
    if texts is not None:
        pairs = texts.items() if isinstance(texts, Mapping) else texts
        settings = {**settings, "class_texts": tuple((str(name), tuple(str(d) for d in descriptions))
                                                     for name, descriptions in pairs)}
    return settings


def resolve_video_spec(spec: VideoBranchSpec, clip_model: nn.Module) -> VideoBranchSpec:
    """`spec` with the temporal transformer's head count fixed: CLIP's text width / 64 (as the authors')."""
    if spec.temporal_heads is not None:
        return spec
    return replace(spec, temporal_heads=max(1, text_width(clip_model) // 64))


def build_video_branch(spec: VideoBranchSpec, clip_model: nn.Module, *, with_visual: bool = False) -> VideoBranch:
    """The Video branch of `spec` on the loaded CLIP `clip_model` (its weights not yet loaded), the logit scale
    starting at CLIP's; `with_visual` keeps CLIP's image tower (end to end), else it scores cached [b, T, D]."""
    spec = resolve_video_spec(spec, clip_model)
    # ValueError for a bad head setting: the stage or loader that took it from the user says it (as_user_error)
    head = VideoHead(spec.embed_dim, head=spec.head, temporal=spec.temporal, tau=spec.tau,
                     max_frames=spec.max_frames, layers=spec.temporal_layers, heads=spec.temporal_heads)
    head.check_frames(spec.frames)
    visual = clip_model.visual if with_visual else None
    return VideoBranch(head, LogitScale(clip_model.logit_scale, spec.logit_scale_cap), visual,
                       training_loss(spec.loss))


def build_attrs_branch(spec: AttrsBranchSpec, clip_model: nn.Module) -> AttributesBranch:
    """The Attributes branch of `spec` on the loaded CLIP `clip_model` (`full`: a copy of its text tower);
    ValueError for a `tune` that is not one of `TUNES`."""
    text = TextTower(clip_model) if spec.tune == "full" else None
    return AttributesBranch(spec.tune, spec.embed_dim, LogitScale(clip_model.logit_scale, spec.logit_scale_cap),
                            text, training_loss(spec.loss))

