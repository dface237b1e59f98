"""The authors' released Video-branch checkpoints as a bike Video branch (for eval and predict).

Their file (`model_state_dict`: the whole CLIP with OpenAI key names, maybe `module.`-prefixed;
`fusion_model_state_dict`: their `video_header`; maybe `epoch` and an optimiser state) does not
record the CLIP architecture or the frame count: those come from the caller (`--model`, `--frames`).
The temporal module is inferred from the keys (`frame_position_embeddings` means the transformer,
its depth from the `resblocks` indices); the head is VCS unless told otherwise (every released
checkpoint uses it) and the VCS queries are all 77 token positions, as their code computes them.
Their CLIP runs with QuickGELU (OpenAI's activation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bike_cli.errors import BikeError, InputError
from bike_cli.io.checkpoints import is_authors_checkpoint, read_authors_checkpoint
from bike_cli.io.feature_cache import CacheMeta
from bike_cli.models.clip import load_clip
from bike_cli.models.clip_spec import ClipSpec
from bike_cli.models.heads import DEFAULT_TAU, VideoHead
from bike_cli.models.loss import LogitScale
from bike_cli.models.text import DEFAULT_TEMPLATE
from bike_cli.models.video_branch import VideoBranch
from bike_cli.models.visual_digest import check_visual_weights, visual_sha256

log = logging.getLogger(__name__)

AUTHORS_VCS_TOKENS = "all"


@dataclass
class AuthorsBranch:
    """An authors' checkpoint rebuilt: the branch, its CLIP (text tower for the classes) and settings."""

    branch: VideoBranch
    clip: nn.Module
    spec: ClipSpec
    settings: dict  # head, temporal, tau, temporal_layers, vcs_tokens, templates, frames
    epoch: int | None


def authors_quick_gelu(pretrained: str | None, quick_gelu: bool | None) -> bool | None:
    """QuickGELU on for an authors' checkpoint given as CLIP weights, unless the user chose."""
    if quick_gelu is None and pretrained and _looks_like_authors(Path(pretrained)):
        log.info("%s is an authors' BIKE checkpoint: its CLIP runs with QuickGELU", pretrained)
        return True
    return quick_gelu


def _looks_like_authors(path: Path) -> bool:
    if not path.is_file() or path.suffix == ".safetensors":
        return False
    try:
        return is_authors_checkpoint(path)
    except BikeError:  # TorchScript archives and other files load_clip reads its own way
        return False


def _temporal_layers(state: dict[str, torch.Tensor]) -> int:
    return len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})


def load_authors_branch(path: Path, model_name: str | None, frames: int | None, *, head: str | None = None,
                        vcs_tokens: str | None = None, with_visual: bool = True,
                        device: torch.device | str = "cpu") -> AuthorsBranch:
    """Rebuild the authors' checkpoint at `path` (see the module docstring)."""
    for option, value in (("--model", model_name), ("--frames", frames)):
        if value is None:
            raise InputError(f"{path} is an authors' BIKE checkpoint, which does not record the "
                             f"{'CLIP architecture' if option == '--model' else 'frames per clip'}: "
                             f"pass {option} (e.g. {'--model ViT-B-16' if option == '--model' else '--frames 8'})")
    authors = read_authors_checkpoint(path)
    clip_model, spec = load_clip(model_name, str(path), quick_gelu=True, device=device)
    temporal_state = authors.temporal_state_dict
    temporal = "transformer" if "frame_position_embeddings.weight" in temporal_state else "none"
    if temporal == "none" and temporal_state:
        raise InputError(f"{path}: fusion_model_state_dict holds {sorted(temporal_state)[:3]}, which is no "
                         "temporal transformer bike knows")
    layers = _temporal_layers(temporal_state) if temporal == "transformer" else 1
    if vcs_tokens is None:
        vcs_tokens = AUTHORS_VCS_TOKENS
        log.info("authors' checkpoint: VCS queries are all %d token positions (--vcs-tokens all), as the "
                 "authors' code computes them; pass --vcs-tokens words for Eq. 5's class-name words",
                 clip_model.positional_embedding.shape[0])
    settings = {"head": head or "vcs", "temporal": temporal, "tau": DEFAULT_TAU, "temporal_layers": layers,
                "vcs_tokens": vcs_tokens, "templates": [DEFAULT_TEMPLATE], "frames": int(frames)}
    text_width = clip_model.ln_final.weight.shape[0]
    max_frames = temporal_state["frame_position_embeddings.weight"].shape[0] if temporal == "transformer" else 77
    video_head = VideoHead(spec.embed_dim, head=settings["head"], temporal=temporal, tau=DEFAULT_TAU,
                           max_frames=max_frames, layers=layers, heads=max(1, text_width // 64))
    if temporal == "transformer":
        _load_temporal(video_head.temporal, temporal_state, path)
    branch = VideoBranch(video_head, LogitScale.from_clip(clip_model), clip_model.visual if with_visual else None)
    log.info("authors' checkpoint %s: %s, temporal %s (%d layers), head %s, %d frames", path, spec.model_name,
             temporal, layers, settings["head"], frames)
    return AuthorsBranch(branch.to(device).eval(), clip_model, spec, settings, authors.epoch)


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
