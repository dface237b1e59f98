"""The Video branch `bike eval` scores with: a trained checkpoint's, an authors' checkpoint's, or zero-shot CLIP.

Zero-shot CLIP is the chosen head on the pretrained model (no temporal transformer) scored with the
model's own logit scale, uncapped. With a feature cache, the branch must come from the CLIP that made
the cache's features (`check_same_model`; `allow_model_mismatch` warns instead).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from bike_cli.config.profile import BIKE, BIKE_SOFTMAX, recorded_profile
from bike_cli.errors import InputError
from bike_cli.io.authors_checkpoint import is_authors_checkpoint
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.identity import check_same_model
from bike_cli.models.authors_branch import check_cache_visual_weights, load_authors_branch
from bike_cli.models.build import VideoBranchSpec, build_video_branch, video_spec_of
from bike_cli.models.clip import load_clip
from bike_cli.models.heads import DEFAULT_TAU
from bike_cli.models.loss import MAX_LOG_SCALE
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import ClassTexts, encode_class_texts
from bike_cli.models.video_branch import VideoBranch

log = logging.getLogger(__name__)


class EvalBranchOptions(Protocol):
    """The options that choose the branch (bike_cli.stages.evaluate.EvalConfig has them)."""

    checkpoint: Path | None  # Video-branch run folder or checkpoint; None = zero-shot CLIP
    videos: Path | None  # scoring decoded videos needs the visual encoder
    model: str | None
    pretrained: str | None
    quick_gelu: bool | None
    head: str
    vcs_tokens: str | None
    templates: list[str]
    frames: int | None
    compat: str
    ignore_visual_weights: bool
    allow_model_mismatch: bool


@dataclass
class VideoModel:
    """The branch to score with, its class texts and CLIP, and how its view logits become scores."""

    branch: VideoBranch
    texts: ClassTexts
    spec: object
    frames: int
    clip: torch.nn.Module
    names: list[str]
    compat: str = BIKE
    rule: str = BIKE_SOFTMAX  # how view logits become scores (bike_cli.config.profile.video_score_rule)
    kept: list | None = None  # raw frame embeddings [b, V, T, D] of decoded videos, when a protocol needs them


def video_model(cfg: EvalBranchOptions, class_names: list[str] | None, cache: FeatureCache | None,
                device) -> tuple[VideoModel, list[str]]:
    """The Video branch: a trained checkpoint, or zero-shot CLIP with the chosen head."""
    if cfg.checkpoint is not None and is_authors_checkpoint(cfg.checkpoint):
        return _authors_model(cfg, class_names, cache, device)
    if cfg.checkpoint is not None:
        ckpt = load_video_checkpoint(cfg.checkpoint)
        settings, names = ckpt.config, ckpt.class_names
        branch_spec = video_spec_of(ckpt, cfg.checkpoint)
        if recorded_profile(settings.get("compat")) != cfg.compat:  # training and scoring rules are separate choices
            log.warning("%s was trained with --compat %s; scoring with --compat %s", cfg.checkpoint,
                        recorded_profile(settings.get("compat")), cfg.compat)
        if class_names is not None and class_names != names:
            log.warning("evaluating on %d classes of --classes (the checkpoint was trained on %d)",
                        len(class_names), len(names))
            names = class_names
        model_name, pretrained, quick = branch_spec.model_name, branch_spec.pretrained, branch_spec.quick_gelu
        if pretrained not in ("none",) and os.sep in pretrained and not Path(pretrained).exists():
            raise InputError(f"the checkpoint's CLIP weights {pretrained} are missing (moved?); "
                             f"{cfg.checkpoint} needs them for the text encoder")
    else:
        if class_names is None:
            raise InputError("zero-shot evaluation needs --classes (or class names recorded in the cache)")
        names = class_names
        model_name = cfg.model or (cache.meta.model_name if cache else None)
        pretrained = cfg.pretrained or (cache.meta.pretrained if cache else None)
        same_model = cache is not None and model_name == cache.meta.model_name  # else open_clip's own choice
        quick = cfg.quick_gelu if cfg.quick_gelu is not None else (cache.meta.quick_gelu if same_model else None)
        if not model_name or not pretrained:
            raise InputError("without --checkpoint, give --model and --pretrained (zero-shot CLIP)")
        branch_spec = None  # zero-shot: made once the model is loaded (its embedding size)
    if cache is not None:  # the cache's features must come from the CLIP this branch was trained on
        what = f"--checkpoint {cfg.checkpoint}" if cfg.checkpoint is not None else "the zero-shot model"
        check_same_model(ckpt.clip if cfg.checkpoint is not None else _zero_shot_identity(model_name),
                         what, cache.meta, str(cache.path), cfg.allow_model_mismatch)
    clip, spec = load_clip(model_name, pretrained, quick_gelu=quick, device=device)
    if cache is not None and cfg.checkpoint is None:
        check_same_model(spec, what, cache.meta, str(cache.path), cfg.allow_model_mismatch)
    if branch_spec is None:
        branch_spec = VideoBranchSpec.of(spec, head=cfg.head, temporal="none", tau=DEFAULT_TAU, temporal_layers=1,
                                         vcs_tokens=cfg.vcs_tokens or "words", templates=cfg.templates,
                                         frames=cfg.frames or (cache.meta.frames if cache else 8))  # the cache's T
    texts = encode_class_texts(clip, get_tokenizer(model_name), names, branch_spec.templates, branch_spec.vcs_tokens)
    # Zero-shot: the model's own scale, uncapped (SigLIP's exceeds 100); a checkpoint's is loaded below.
    branch = build_video_branch(branch_spec, clip, with_visual=bool(cfg.videos),
                                cap=None if cfg.checkpoint is None else MAX_LOG_SCALE).to(device)
    visual = branch.visual
    if cfg.checkpoint is not None:
        if visual is None and any(k.startswith("visual.") for k in ckpt.state_dict):
            raise InputError(f"{cfg.checkpoint} fine-tuned CLIP's visual encoder (trained end to end); a feature "
                             "cache holds the original CLIP's features: evaluate it with --videos and --views")
        state = {k: v for k, v in ckpt.state_dict.items() if visual is not None or not k.startswith("visual.")}
        missing, unexpected = branch.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("visual.")]
        if missing or unexpected:
            raise InputError(f"{cfg.checkpoint} does not fit its own settings: missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}")
    frames = cfg.frames or branch_spec.frames or (cache.meta.frames if cache else 8)
    return VideoModel(branch.eval(), texts, spec, int(frames), clip, names, cfg.compat), names


def _authors_model(cfg: EvalBranchOptions, class_names: list[str] | None, cache: FeatureCache | None,
                   device) -> tuple[VideoModel, list[str]]:
    """The Video branch of an authors' checkpoint; architecture and frames from options (or the cache)."""
    if class_names is None:
        raise InputError(f"{cfg.checkpoint} is an authors' checkpoint, which records no class names: pass --classes")
    ab = load_authors_branch(cfg.checkpoint, cfg.model or (cache.meta.model_name if cache else None),
                             cfg.frames or (cache.meta.frames if cache else None), head=cfg.head,
                             vcs_tokens=cfg.vcs_tokens, with_visual=cfg.videos is not None, device=device)
    if cache is not None:
        check_cache_visual_weights(ab, cache.meta, cache.path, cfg.checkpoint, cfg.ignore_visual_weights)
    texts = encode_class_texts(ab.clip, get_tokenizer(ab.spec.model_name), class_names, ab.branch_spec.templates,
                               ab.branch_spec.vcs_tokens)
    return VideoModel(ab.branch, texts, ab.spec, ab.branch_spec.frames, ab.clip, class_names, cfg.compat), class_names


def _zero_shot_identity(model_name: str) -> dict:
    """What is known of the zero-shot model before loading it (the rest is checked once it is loaded)."""
    return {"model_name": model_name}
