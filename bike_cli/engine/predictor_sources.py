"""A `Predictor` from each kind of model source `bike predict` takes.

- an authors' checkpoint: the architecture and frame count from the options, the classes from the user;
- plain CLIP, zero-shot: the given classes, the VCS head by default, no temporal module, CLIP's own
  logit scale;
- a Video-branch checkpoint of bike's own: CLIP rebuilt from the checkpoint's record (architecture,
  weights, QuickGELU), the head and temporal module from its settings, the class names and prompt
  templates from the run. When the recorded weights are a file that has moved, `pretrained` points
  to the same file (its sha256 is checked).

Each returns the predictor and the CLIP model whose text tower encoded its classes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from bike_cli.engine.predictor import Predictor
from bike_cli.errors import InputError, ModelLoadError
from bike_cli.io.checkpoints import BranchCheckpoint, load_video_checkpoint
from bike_cli.models.authors_branch import load_authors_branch
from bike_cli.models.build import VideoBranchSpec, build_video_branch, video_spec_of
from bike_cli.models.clip import load_clip
from bike_cli.models.clip_spec import ClipSpec, file_sha256
from bike_cli.models.heads import DEFAULT_TAU
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import DEFAULT_TEMPLATE, encode_class_texts
from bike_cli.models.video_branch import VideoBranch

log = logging.getLogger(__name__)


def authors_predictor(checkpoint: Path, model: str, names: list[str], device: torch.device, *,
                      frames: int | None = None, head: str | None = None,
                      vcs_tokens: str | None = None) -> tuple[Predictor, nn.Module]:
    """An authors' checkpoint: architecture `model` and `frames` (None: their default) from the options,
    the classes `names` from the user; `head` / `vcs_tokens` None: the checkpoint's."""
    ab = load_authors_branch(checkpoint, model, frames, head=head, vcs_tokens=vcs_tokens, device=device)
    settings = ab.branch_spec
    texts = encode_class_texts(ab.clip, get_tokenizer(ab.spec.model_name), names, settings.templates,
                               settings.vcs_tokens)
    description = {"checkpoint": str(checkpoint), "model_name": ab.spec.model_name, "pretrained": ab.spec.pretrained,
                   "head": settings.head, "temporal": settings.temporal, "vcs_tokens": settings.vcs_tokens,
                   "frames": settings.frames, "epoch": ab.epoch, "layout": "authors"}
    return Predictor(ab.branch, ab.spec, names, texts, settings.frames, description, device), ab.clip


def zero_shot_predictor(model: str, pretrained: str, names: list[str], frames: int, device: torch.device, *,
                        quick_gelu: bool | None = None, head: str | None = None,
                        vcs_tokens: str | None = None) -> tuple[Predictor, nn.Module]:
    """Plain CLIP over `frames` frames, classes `names`: the VCS head and the words' tokens by default."""
    clip_model, spec = load_clip(model, pretrained, quick_gelu=quick_gelu, device=device)
    head_name, vcs_tokens = head or "vcs", vcs_tokens or "words"
    texts = encode_class_texts(clip_model, get_tokenizer(spec.model_name), names, [DEFAULT_TEMPLATE], vcs_tokens)
    branch_spec = VideoBranchSpec.of(spec, head=head_name, temporal="none", tau=DEFAULT_TAU, vcs_tokens=vcs_tokens,
                                     frames=frames)
    branch = build_video_branch(branch_spec, clip_model, with_visual=True, cap=None)  # the model's own scale
    description = {"checkpoint": None, "model_name": spec.model_name, "pretrained": spec.pretrained,
                   "head": head_name, "temporal": "none", "vcs_tokens": vcs_tokens, "frames": frames}
    return Predictor(branch, spec, names, texts, frames, description, device), clip_model


def checkpoint_predictor(checkpoint: Path, device: torch.device, *, pretrained: str | None = None,
                         frames: int | None = None, head: str | None = None,
                         vcs_tokens: str | None = None) -> tuple[Predictor, nn.Module]:
    """A bike Video-branch checkpoint (run folder or file); `pretrained` relocates its CLIP weights file,
    `frames` None: the trained count; `head` / `vcs_tokens`, when given, must be the trained ones."""
    ckpt = load_video_checkpoint(checkpoint)
    settings = video_spec_of(ckpt, checkpoint)
    for option, given, trained in (("--head", head, settings.head), ("--vcs-tokens", vcs_tokens,
                                                                     settings.vcs_tokens)):
        if given is not None and given != trained:
            raise InputError(f"{option} {given} differs from {trained!r}, the setting {checkpoint} was "
                             f"trained with; leave {option} out with --checkpoint")
    clip_model, spec = _checkpoint_clip(ckpt, checkpoint, pretrained, device)
    texts = encode_class_texts(clip_model, get_tokenizer(spec.model_name), ckpt.class_names,
                               settings.templates, settings.vcs_tokens)
    branch = build_video_branch(settings, clip_model, with_visual=True)
    _load_branch_state(branch, ckpt, checkpoint)
    frames = frames or settings.frames
    if frames != settings.frames:
        log.warning("predicting with %d frames; %s was trained with %d", frames, checkpoint, settings.frames)
    description = {"checkpoint": str(checkpoint), "model_name": spec.model_name, "pretrained": spec.pretrained,
                   "head": settings.head, "temporal": settings.temporal, "vcs_tokens": settings.vcs_tokens,
                   "frames": frames, "epoch": ckpt.epoch}
    return Predictor(branch, spec, ckpt.class_names, texts, frames, description, device), clip_model


def _checkpoint_clip(ckpt: BranchCheckpoint, source: Path, pretrained: str | None,
                     device: torch.device) -> tuple[nn.Module, ClipSpec]:
    """CLIP as the checkpoint records it; `pretrained` relocates a weights file (same sha256)."""
    record = ckpt.clip
    recorded_sha = record.get("checkpoint_sha256")
    weights = record["pretrained"]
    if pretrained is not None:
        if recorded_sha is None:
            raise InputError(f"--pretrained relocates the CLIP weights file of a checkpoint, but {source} was "
                             f"trained from {weights!r}, which is not a file; leave --pretrained out")
        if not Path(pretrained).is_file():
            raise ModelLoadError(f"--pretrained {pretrained}: no such file")
        if file_sha256(pretrained) != recorded_sha:
            raise ModelLoadError(f"--pretrained {pretrained} is not the CLIP weights file {source} was trained "
                                 f"from (sha256 differs from the recorded {recorded_sha[:12]}...)")
        weights = pretrained
    elif recorded_sha is not None and not Path(weights).is_file():
        raise ModelLoadError(f"{source} was trained from the CLIP weights file {weights}, which no longer exists; "
                             "pass --pretrained PATH with the same file where it is now")
    clip_model, spec = load_clip(record["model_name"], weights, quick_gelu=record["quick_gelu"], device=device)
    if spec.embed_dim != record["embed_dim"]:
        raise ModelLoadError(f"{record['model_name']} now embeds in {spec.embed_dim} dimensions; {source} "
                             f"records {record['embed_dim']}")
    return clip_model, spec


def _load_branch_state(branch: VideoBranch, ckpt: BranchCheckpoint, source: Path) -> None:
    """The checkpoint's head and logit scale (and image tower, for end-to-end runs) into `branch`."""
    own = branch.state_dict()
    state = ckpt.state_dict
    missing = [k for k in own if k not in state and not k.startswith("visual.")]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise InputError(f"{source} does not fit the Video branch its settings describe: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}, other shapes {shapes[:4]}")
    branch.load_state_dict(state, strict=False)
    tuned = sum(k.startswith("visual.") for k in state)
    log.info("loaded %s (epoch %d%s)", source, ckpt.epoch, ", fine-tuned image tower" if tuned else "")
