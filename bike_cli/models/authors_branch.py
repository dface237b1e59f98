"""The authors' released Video-branch checkpoints rebuilt as a bike Video branch (for eval and predict).

The file is read, and its temporal module inferred from the keys, by `bike_cli.io.authors_checkpoint`;
the architecture and the frame count come from the caller (`--model`, `--frames`). The head is VCS
unless told otherwise (every released checkpoint uses it) and the VCS queries are all 77 token
positions, as their code computes them. Their CLIP runs with QuickGELU (OpenAI's activation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bike_cli.errors import InputError
from bike_cli.io.authors_checkpoint import AUTHORS_VCS_TOKENS, authors_temporal, read_authors_checkpoint
from bike_cli.io.feature_cache import CacheMeta
from bike_cli.models.build import VideoBranchSpec, build_video_branch, resolve_video_spec
from bike_cli.models.clip import load_clip
from bike_cli.models.clip_spec import ClipSpec
from bike_cli.models.heads import DEFAULT_TAU
from bike_cli.models.video_branch import VideoBranch
from bike_cli.models.visual_digest import check_visual_weights, visual_sha256

log = logging.getLogger(__name__)


@dataclass
class AuthorsBranch:
    """An authors' checkpoint rebuilt: the branch, its CLIP (text tower for the classes) and settings."""

    branch: VideoBranch
    clip: nn.Module
    spec: ClipSpec
    branch_spec: VideoBranchSpec  # head, temporal, tau, temporal_layers, vcs_tokens, templates, frames
    epoch: int | None


def _require_options(path: Path, model_name: str | None, frames: int | None) -> None:
    for option, value in (("--model", model_name), ("--frames", frames)):
        if value is None:
            raise InputError(f"{path} is an authors' BIKE checkpoint, which does not record the "
                             f"{'CLIP architecture' if option == '--model' else 'frames per clip'}: "
                             f"pass {option} (e.g. {'--model ViT-B-16' if option == '--model' else '--frames 8'})")


def load_authors_branch(path: Path, model_name: str | None, frames: int | None, *, head: str | None = None,
                        vcs_tokens: str | None = None, with_visual: bool = True,
                        device: torch.device | str = "cpu") -> AuthorsBranch:
    """Rebuild the authors' checkpoint at `path` (see the module docstring)."""
    _require_options(path, model_name, frames)
    authors = read_authors_checkpoint(path)
    clip_model, spec = load_clip(model_name, str(path), quick_gelu=True, device=device)
    found = authors_temporal(authors, path)
    if vcs_tokens is None:
        vcs_tokens = AUTHORS_VCS_TOKENS
        log.info("authors' checkpoint: VCS queries are all %d token positions (--vcs-tokens all), as the "
                 "authors' code computes them; pass --vcs-tokens words for Eq. 5's class-name words",
                 clip_model.positional_embedding.shape[0])
    branch_spec = resolve_video_spec(VideoBranchSpec.of(
        spec, head=head or "vcs", temporal=found.temporal, temporal_layers=found.layers, max_frames=found.max_frames,
        tau=DEFAULT_TAU, vcs_tokens=vcs_tokens, frames=int(frames)), clip_model)
    branch = build_video_branch(branch_spec, clip_model, with_visual=with_visual)
    if found.temporal == "transformer":
        _load_temporal(branch.head.temporal, authors.temporal_state_dict, path)
    log.info("authors' checkpoint %s: %s, temporal %s (%d layers), head %s, %d frames", path, spec.model_name,
             found.temporal, found.layers, branch_spec.head, frames)
    return AuthorsBranch(branch.to(device).eval(), clip_model, spec, branch_spec, authors.epoch)


def _load_temporal(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise InputError(f"{path}: fusion_model_state_dict does not fit the temporal transformer of this "
                         f"--model: missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {shapes[:4]}")
    module.load_state_dict(state)


def check_cache_visual_weights(authors: AuthorsBranch, meta: CacheMeta, cache: Path, checkpoint: Path,
                               ignore: bool) -> None:
    """The checkpoint's visual encoder must be the one that made the cache (or `ignore` is set)."""
    own = visual_sha256(authors.clip.state_dict())
    recorded = meta.visual_sha256
    if recorded is None and meta.checkpoint_sha256 and meta.checkpoint_sha256 == authors.spec.checkpoint_sha256:
        recorded = own  # an older cache, extracted from this very checkpoint file
    check_visual_weights(own, recorded, checkpoint, cache, ignore)
    if ignore and own != recorded:
        log.warning("--ignore-visual-weights: scoring %s, made by other visual weights than %s's", cache, checkpoint)
