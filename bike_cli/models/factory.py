"""The one loader of trained branches (bike's checkpoints, the authors', zero-shot CLIP, `--init-from`): every
weight source converted to the branch's names, one strict load."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from bike_cli.config.stages import DEFAULT_TEMPLATE
from bike_cli.data.class_names import descriptions_for
from bike_cli.errors import InputError, as_user_error
from bike_cli.io.checkpoints import (
    AUTHORS_VCS_TOKENS,
    BranchCheckpoint,
    authors_branch_state,
    authors_temporal,
    is_authors_checkpoint,
    load_attrs_checkpoint,
    load_video_checkpoint,
    read_authors_checkpoint,
)
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.identity import check_same_model
from bike_cli.models.attributes import sentence_cosines
from bike_cli.models.attrs_branch import AttributesBranch
from bike_cli.models.authors import scaled_row_scores
from bike_cli.models.build import (
    AttrsBranchSpec,
    BranchSpec,
    ClassTextsRecord,
    VideoBranchSpec,
    build_attrs_branch,
    build_video_branch,
    frozen_settings,
    resolve_video_spec,
)
from bike_cli.models.clip import (
    PREFIX,
    ClipSpec,
    cache_clip,
    check_visual_weights,
    load_clip,
    recorded_clip,
    visual_sha256,
)
from bike_cli.models.heads import DEFAULT_TAU
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import ClassTexts, PromptError, encode_class_texts
from bike_cli.models.video_branch import VideoBranch, ViewRule

log = logging.getLogger(__name__)

ZERO_SHOT_FRAMES = 8  # frames per clip of zero-shot CLIP when neither the caller nor a cache says
TextsByClass = Mapping[str, Sequence[str]]  # --class-texts as read: class name -> its descriptions


@dataclass
class VideoClassifier:
    """A loaded Video branch with what it scores against: its classes' texts, its CLIP and frame count."""

    branch: VideoBranch  # in eval mode, on the device
    texts: ClassTexts  # the K classes, encoded by `clip`'s text tower
    names: list[str]  # the K class names
    clip: nn.Module  # the CLIP whose text tower encoded `texts` (its image tower is the branch's, when kept)
    spec: ClipSpec
    branch_spec: VideoBranchSpec
    frames: int  # T frames per clip to score with
    description: dict  # the model as `bike predict --json` reports it
    settings: dict  # the run's recorded settings (a bike checkpoint's `config`; {} otherwise)

    def scores(self, frames: torch.Tensor, rule: ViewRule) -> torch.Tensor:
        """Frame embeddings [b, V, T, D] -> class scores [b, K] by `rule`; InputError where they are NaN or inf."""
        return finite_scores(self.branch.class_probabilities(frames, self.texts, rule),
                             self.description.get("checkpoint") or "the zero-shot model")


def finite_scores(scores: torch.Tensor, source: str) -> torch.Tensor:
    """`scores` [b, K] when every one is finite; else InputError naming `source`, whose weights overflow."""
    if not bool(scores.isfinite().all()):  # the caller reads them on the host next: no extra wait
        raise InputError(f"{source} gives NaN or infinite class scores: its weights are finite but overflow (the "
                         "run that saved it diverged); train it again with a lower --lr")
    return scores


def load_video_branch(source: Path | None, *, class_names: list[str] | None = None, model: str | None = None,
                      pretrained: str | None = None, quick_gelu: bool | None = None, head: str | None = None,
                      vcs_tokens: str | None = None, templates: Sequence[str] | None = None,
                      frames: int | None = None, cache: FeatureCache | None = None, allow_model_mismatch: bool = False,
                      ignore_visual_weights: bool = False, device: torch.device | str = "cpu",
                      class_texts: TextsByClass | None = None, class_texts_source: object = "--class-texts"
                      ) -> VideoClassifier:
    """The Video branch of a bike checkpoint `source` (CLIP and branch rebuilt from its records), the authors'
    (architecture and frames from the caller or `cache`) or None (zero-shot CLIP); with `cache`, without its
    image tower (the cache must come from the branch's CLIP and image tower).

    `class_names` replace a checkpoint's own; `pretrained` relocates its CLIP weights file; `frames` None:
    the trained count (or the cache's). What a bike checkpoint fixes, given, must be what it was trained
    with (`check_fixed_by_checkpoint`); `class_texts` (read from `class_texts_source`): see `class_descriptions`."""
    described_by = (class_texts, class_texts_source)
    if source is None:
        return _zero_shot(class_names, model, pretrained, quick_gelu, head, vcs_tokens, templates, frames, cache,
                          allow_model_mismatch, device, described_by)
    if is_authors_checkpoint(source):
        if quick_gelu is False:
            raise InputError(f"--no-quick-gelu: {source} is an authors' checkpoint, whose CLIP uses QuickGELU; "
                             "leave --quick-gelu out with it")
        return _authors(source, class_names, model, head, vcs_tokens, templates, frames, cache,
                        ignore_visual_weights, device, described_by)
    ckpt = load_video_checkpoint(source)
    branch_spec = spec_of(VideoBranchSpec, ckpt, source)
    check_fixed_by_checkpoint(source, branch_spec, model=model, head=head, vcs_tokens=vcs_tokens,
                              templates=templates)
    names = ckpt.class_names
    if class_names is not None and class_names != names:
        log.warning("evaluating on %d classes of --classes (the checkpoint was trained on %d)",
                    len(class_names), len(names))
        names = class_names
    tuned = any(k.startswith(PREFIX) for k in ckpt.state_dict)
    if cache is not None:  # the cache's features must come from the CLIP this branch was trained on
        check_same_model(ckpt.clip, f"--checkpoint {source}", cache.meta, str(cache.path), allow_model_mismatch)
        if tuned:
            raise InputError(f"{source} fine-tuned CLIP's visual encoder (trained end to end); a feature "
                             "cache holds the original CLIP's features: evaluate it with --videos and --views")
    clip_model, spec = recorded_clip(ckpt.clip, source, pretrained, device)
    check_fixed_by_checkpoint(source, branch_spec, quick_gelu=quick_gelu, trained_quick_gelu=spec.quick_gelu)
    with as_user_error(ValueError, prefix=f"{source}: "):
        branch = build_video_branch(branch_spec, clip_model, with_visual=cache is None)
    load_branch_weights(branch, ckpt.state_dict, f"{source} does not fit the Video branch its settings describe")
    log.info("loaded %s (epoch %d%s)", source, ckpt.epoch, ", fine-tuned image tower" if tuned else "")
    frames = frames or branch_spec.frames
    if frames != branch_spec.frames:
        log.warning("scoring with %d frames; %s was trained with %d", frames, source, branch_spec.frames)
    descriptions = class_descriptions(names, *described_by, branch_spec.class_texts, source)
    return _classifier(branch, clip_model, spec, branch_spec, names, frames, device, ckpt.config, descriptions,
                       checkpoint=str(source), epoch=ckpt.epoch)


def class_descriptions(names: list[str], given: TextsByClass | None, given_source: object,
                       recorded: ClassTextsRecord | None, checkpoint: object = None) -> list[tuple[str, ...]] | None:
    """Per class of `names` its descriptions: the `given` class texts (a warning where `checkpoint` was trained
    with others), else those it recorded, else None (the names). InputError for classes the texts miss."""
    if given is not None:
        descriptions = descriptions_for(given, names, given_source)
        if checkpoint is not None and descriptions != _recorded_for(recorded, names):
            log.warning("scoring with the class texts of %s; %s was trained with %s", given_source, checkpoint,
                        "other class texts" if recorded else "its class names (no --class-texts)")
        return descriptions
    if recorded is None:
        return None
    return descriptions_for(dict(recorded), names, f"the class texts {checkpoint} was trained with (pass "
                                                   "--class-texts to describe other classes)")


def _recorded_for(recorded: ClassTextsRecord | None, names: list[str]) -> list[tuple[str, ...]] | None:
    """The recorded descriptions of `names`, None where the record lacks one of them."""
    try:
        return None if recorded is None else descriptions_for(dict(recorded), names, "")
    except InputError:
        return None


def check_fixed_by_checkpoint(source: Path, trained: VideoBranchSpec, *, model: str | None = None,
                              head: str | None = None, vcs_tokens: str | None = None,
                              templates: Sequence[str] | None = None, quick_gelu: bool | None = None,
                              trained_quick_gelu: bool | None = None) -> None:
    """Each setting given (not None) must be what the bike checkpoint `source` was trained with (else InputError)."""
    fixed = (("--model", model, trained.model_name), ("--quick-gelu", quick_gelu, trained_quick_gelu),
             ("--head", head, trained.head), ("--vcs-tokens", vcs_tokens, trained.vcs_tokens),
             ("--template", None if templates is None else tuple(templates), tuple(trained.templates)))
    for option, given, value in fixed:
        if given is not None and given != value:
            shown = " ".join(map(repr, given)) if isinstance(given, tuple) else given
            raise InputError(f"{option} {shown} differs from {value!r}, the setting {source} was "
                             f"trained with; leave {option} out with --checkpoint")


def _classifier(branch: VideoBranch, clip_model: nn.Module, spec: ClipSpec, branch_spec: VideoBranchSpec,
                names: list[str], frames: int, device, settings: dict,
                descriptions: list[tuple[str, ...]] | None, **described) -> VideoClassifier:
    """The classifier, its class texts (the names, or `descriptions` per class) encoded by `clip_model`'s text tower."""
    with as_user_error(ValueError):
        branch.head.check_frames(frames)  # --frames beyond the temporal transformer's position table
    with as_user_error(PromptError):
        texts = encode_class_texts(clip_model, get_tokenizer(spec.model_name), names, branch_spec.templates,
                                   branch_spec.vcs_tokens, descriptions=descriptions)
    description = {"checkpoint": described.pop("checkpoint"), "model_name": spec.model_name,
                   "pretrained": spec.pretrained, "head": branch_spec.head, "temporal": branch_spec.temporal,
                   "vcs_tokens": branch_spec.vcs_tokens, "frames": frames,
                   "class_texts": sum(map(len, descriptions)) if descriptions else None, **described}
    return VideoClassifier(branch.to(device).eval(), texts, list(names), clip_model, spec, branch_spec, int(frames),
                           description, settings)


def _authors(source: Path, class_names: list[str] | None, model: str | None, head: str | None,
             vcs_tokens: str | None, templates: Sequence[str] | None, frames: int | None, cache: FeatureCache | None,
             ignore_visual_weights: bool, device, given: tuple) -> VideoClassifier:
    """The authors' checkpoint: their CLIP (QuickGELU) and temporal module, VCS over all token positions."""
    if class_names is None:
        raise InputError(f"{source} is an authors' checkpoint, which records no class names: pass --classes")
    model = model or (cache.meta.model_name if cache else None)
    frames = frames or (cache.meta.frames if cache else None)
    for option, value in (("--model", model), ("--frames", frames)):
        if value is None:
            raise InputError(f"{source} is an authors' BIKE checkpoint, which does not record the "
                             f"{'CLIP architecture' if option == '--model' else 'frames per clip'}: "
                             f"pass {option} (e.g. {'--model ViT-B-16' if option == '--model' else '--frames 8'})")
    authors = read_authors_checkpoint(source)
    clip_model, spec = load_clip(model, str(source), quick_gelu=True, device=device)
    found = authors_temporal(authors, source)
    if vcs_tokens is None:
        vcs_tokens = AUTHORS_VCS_TOKENS
        log.info("authors' checkpoint: VCS queries are all %d token positions (--vcs-tokens all), as the "
                 "authors' code computes them; pass --vcs-tokens words for Eq. 5's class-name words",
                 clip_model.positional_embedding.shape[0])
    branch_spec = resolve_video_spec(VideoBranchSpec.of(
        spec, head=head or "vcs", temporal=found.temporal, temporal_layers=found.layers, max_frames=found.max_frames,
        tau=DEFAULT_TAU, vcs_tokens=vcs_tokens, templates=templates or [DEFAULT_TEMPLATE], frames=int(frames)),
        clip_model)
    with as_user_error(ValueError):  # --head
        branch = build_video_branch(branch_spec, clip_model, with_visual=cache is None)
    if cache is not None:
        _check_cache_visual(clip_model, spec, cache, source, ignore_visual_weights)
    load_branch_weights(branch, authors_branch_state(authors),
                        f"{source}: the authors' checkpoint does not fit the Video branch of --model {model}")
    log.info("authors' checkpoint %s: %s, temporal %s (%d layers), head %s, %d frames", source, spec.model_name,
             found.temporal, found.layers, branch_spec.head, frames)
    return _classifier(branch, clip_model, spec, branch_spec, class_names, int(frames), device, {},
                       class_descriptions(class_names, *given, None), checkpoint=str(source), epoch=authors.epoch,
                       layout="authors")


def _check_cache_visual(clip_model: nn.Module, spec: ClipSpec, cache: FeatureCache, source: Path,
                        ignore: bool) -> None:
    """The checkpoint's image tower must be the one that made the cache (or `ignore` is set)."""
    own, meta = visual_sha256(clip_model.state_dict()), cache.meta
    recorded = meta.visual_sha256
    if recorded is None and meta.checkpoint_sha256 and meta.checkpoint_sha256 == spec.checkpoint_sha256:
        recorded = own  # an older cache, extracted from this very checkpoint file
    check_visual_weights(own, recorded, source, cache.path, ignore)
    if ignore and own != recorded:
        log.warning("--ignore-visual-weights: scoring %s, made by other visual weights than %s's", cache.path, source)


def _zero_shot(class_names: list[str] | None, model: str | None, pretrained: str | None, quick_gelu: bool | None,
               head: str | None, vcs_tokens: str | None, templates: Sequence[str] | None, frames: int | None,
               cache: FeatureCache | None, allow_model_mismatch: bool, device, given: tuple) -> VideoClassifier:
    """Zero-shot CLIP: the head on the pretrained model, no temporal module, the model's own scale uncapped
    (SigLIP's exceeds 100)."""
    if class_names is None:
        raise InputError("zero-shot evaluation needs --classes (or class names recorded in the cache)")
    clip_model, spec = cache_clip(model, pretrained, quick_gelu, cache, what="the zero-shot model",
                                  allow_model_mismatch=allow_model_mismatch, device=device)
    frames = frames or (cache.meta.frames if cache else ZERO_SHOT_FRAMES)  # the cache's T
    branch_spec = VideoBranchSpec.of(spec, head=head or "vcs", temporal="none", tau=DEFAULT_TAU, temporal_layers=1,
                                     vcs_tokens=vcs_tokens or "words", templates=templates or [DEFAULT_TEMPLATE],
                                     frames=frames, logit_scale_cap=None)
    with as_user_error(ValueError):  # --head
        branch = build_video_branch(branch_spec, clip_model, with_visual=cache is None)
    return _classifier(branch, clip_model, spec, branch_spec, class_names, frames, device, {},
                       class_descriptions(class_names, *given, None), checkpoint=None)


def load_branch_weights(branch: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """One strict load of a branch's state dict, InputError (`what`: ...) naming keys that do not fit. An image tower
    the state lacks keeps its CLIP weights; a branch without one (cached features) takes none of the state's."""
    own = branch.state_dict()
    if getattr(branch, "visual", None) is None:
        state = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    elif not any(k.startswith(PREFIX) for k in state):
        state = {**{k: v for k, v in own.items() if k.startswith(PREFIX)}, **state}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise InputError(f"{what}: missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {shapes[:4]}")
    branch.load_state_dict(state)


def init_branch_weights(branch: VideoBranch, source: Path, cache: FeatureCache | None = None,
                        cache_visual: str | None = None, ignore_visual_weights: bool = False, *,
                        spec: VideoBranchSpec | None = None, model_from: str = "the options",
                        allow_model_mismatch: bool = False) -> None:
    """`train-video --init-from`: start `branch` from bike's or the authors' Video branch; on cached features its
    image tower must have made the cache (`cache_visual`). With `spec` (the branch trained, its model from
    `model_from`) a checkpoint of another CLIP is refused (warned with `allow_model_mismatch`, same widths)."""
    trained = None
    if is_authors_checkpoint(source):
        state = authors_branch_state(read_authors_checkpoint(source))
    else:
        ckpt = load_video_checkpoint(source)
        state = ckpt.state_dict
        trained = spec_of(VideoBranchSpec, ckpt, source)
        if spec is not None and trained.model_name != spec.model_name:
            differ = (f"--init-from {source} is a Video branch of {trained.model_name} ({trained.embed_dim}-d, as its "
                      f"checkpoint records), and this run trains {spec.model_name} ({spec.embed_dim}-d, {model_from}): "
                      "the models differ")
            if not allow_model_mismatch or trained.embed_dim != spec.embed_dim:
                raise InputError(f"{differ}; start from a run of {spec.model_name}, or train {trained.model_name}")
            log.warning("%s; going on (--allow-model-mismatch)", differ)
    if branch.visual is None:
        recorded = (cache.meta.visual_sha256 if cache is not None else None) or cache_visual
        check_visual_weights(visual_sha256(state), recorded, source, cache.path if cache else "the cache",
                             ignore_visual_weights)
    load_branch_weights(branch, state, f"--init-from {source} does not fit this Video branch "
                                       f"({_unlike(trained, spec) or 'head/temporal settings differ?'})")
    log.info("initialised from %s (%d tensors)", source, len(state))


def _unlike(trained: VideoBranchSpec | None, spec: VideoBranchSpec | None) -> str:
    """The settings in which a checkpoint's spec and the branch being trained differ, as options."""
    if trained is None or spec is None:
        return ""
    return "; ".join(f"--{key.replace('_', '-')} {getattr(trained, key)} in the checkpoint, {getattr(spec, key)} "
                     "now" for key in ("head", "temporal", "temporal_layers", "temporal_heads", "max_frames")
                     if getattr(trained, key) != getattr(spec, key))


@dataclass
class AttrsClassifier:
    """A loaded Attributes branch (None: CLIP's frozen text encoder, no training) and its classes."""

    branch: AttributesBranch | None
    clip: nn.Module  # its text tower encodes the sentences (`--tune head`) and encoded the classes
    spec: ClipSpec
    classes: torch.Tensor  # [K, D] pooled class embeddings
    tune: str  # head | full | none (no branch)
    tokenizer: Callable[[list[str]], torch.Tensor]  # the CLIP's: sentences -> tokens [R, L]

    @torch.no_grad()
    def scores(self, sentences: list[str], rule=scaled_row_scores) -> torch.Tensor:
        """Attribute sentences -> scores [R, K] by `rule` of the cosine logits [R, K] and exp(logit scale)."""
        if self.branch is None:
            logits = sentence_cosines(self.clip, self.tokenizer, sentences, self.classes, len(sentences))  # [R, K]
            return rule(logits, self.clip.logit_scale.exp())
        tokens = self.tokenizer(sentences).to(self.classes.device)  # [R, L]
        inputs = tokens if self.tune == "full" else self.clip.encode_text(tokens).float()
        return finite_scores(self.branch.class_probabilities(inputs, self.classes, rule), "the Attributes-branch checkpoint")


def load_attrs_branch(source: Path | None, class_names: list[str], *,
                      clip: tuple[nn.Module, ClipSpec] | None = None,
                      device: torch.device | str = "cpu", class_texts: TextsByClass | None = None,
                      class_texts_source: object = "--class-texts") -> AttrsClassifier:
    """A train-attrs checkpoint, or (None) the plug-and-play branch on `clip`, CLIP's frozen text encoder;
    the classes described by `class_texts` or the checkpoint's recorded ones (see `class_descriptions`)."""
    if source is None:
        clip_model, spec = clip
        branch, tune, templates, recorded = None, "none", [DEFAULT_TEMPLATE], None
    else:
        ckpt = load_attrs_checkpoint(source)
        attrs_spec = spec_of(AttrsBranchSpec, ckpt, source)
        clip_model, spec = load_clip(attrs_spec.model_name, attrs_spec.pretrained, quick_gelu=attrs_spec.quick_gelu,
                                     device=device)
        with as_user_error(ValueError, prefix=f"{source}: "):
            branch = build_attrs_branch(attrs_spec, clip_model)
        load_branch_weights(branch, ckpt.state_dict, f"{source} does not fit the Attributes branch its settings "
                                                     "describe")
        branch = branch.to(device).eval()
        tune, templates, recorded = attrs_spec.tune, attrs_spec.templates, attrs_spec.class_texts
    descriptions = class_descriptions(class_names, class_texts, class_texts_source, recorded, source)
    tokenizer = get_tokenizer(spec.model_name)
    with as_user_error(PromptError):
        classes = encode_class_texts(clip_model, tokenizer, class_names, templates, "all",
                                     descriptions=descriptions).pooled
    return AttrsClassifier(branch, clip_model, spec, classes, tune, tokenizer)


# The settings a schema-1 checkpoint's `config` holds, each with the type its spec field takes
_SCHEMA1 = {VideoBranchSpec: {"head": str, "temporal": str, "temporal_layers": int, "tau": float, "vcs_tokens": str,
                              "templates": tuple, "frames": int},
            AttrsBranchSpec: {"tune": str, "templates": tuple}}


def spec_of(cls: type[BranchSpec], ckpt: BranchCheckpoint, source: object) -> BranchSpec:
    """The branch spec `cls` of a checkpoint: its `model_args` (InputError when they are not `cls`'s fields), or
    (schema 1) derived from config + clip."""
    if ckpt.model_args is None:
        clip = ckpt.clip
        return cls(model_name=clip["model_name"], pretrained=clip["pretrained"], quick_gelu=clip["quick_gelu"],
                   embed_dim=int(clip["embed_dim"]),
                   **{key: to_type(ckpt.config[key]) for key, to_type in _SCHEMA1[cls].items()})
    unknown = sorted(set(ckpt.model_args) - {f.name for f in fields(cls)})
    try:
        if unknown:
            raise TypeError(f"unknown fields {unknown}")
        return cls(**frozen_settings(ckpt.model_args))
    except (TypeError, AttributeError) as e:
        raise InputError(f"{source}: model_args do not describe a {cls.__name__}: {e}") from None
