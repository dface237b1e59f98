"""`train-video --init-from`: start a Video branch from a trained one, bike's checkpoint or the authors'."""

from __future__ import annotations

import logging
from pathlib import Path

from bike_cli.errors import InputError
from bike_cli.io.authors_checkpoint import authors_branch_state, is_authors_checkpoint, read_authors_checkpoint
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.models.video_branch import VideoBranch
from bike_cli.models.visual_digest import check_visual_weights, visual_sha256

log = logging.getLogger(__name__)


def init_from(model: VideoBranch, path: Path, cache: FeatureCache | None = None, cache_visual: str | None = None,
              ignore_visual_weights: bool = False) -> None:
    """Start from a trained Video branch: bike's checkpoint, or the authors' released one.

    On cached features the checkpoint's visual encoder is not used: its weights must be those that
    made the cache (`cache_visual`, the digest of the cache's CLIP), unless `ignore_visual_weights`."""
    if is_authors_checkpoint(path):
        state = authors_branch_state(read_authors_checkpoint(path))
    else:
        state = load_video_checkpoint(path).state_dict
    own = model.state_dict()
    if model.visual is None:  # cached features: the checkpoint's visual encoder is not used
        recorded = (cache.meta.visual_sha256 if cache is not None else None) or cache_visual
        check_visual_weights(visual_sha256(state), recorded, path, cache.path if cache else "the cache",
                             ignore_visual_weights)
        state = {k: v for k, v in state.items() if not k.startswith("visual.")}
    missing = [k for k in own if k not in state and not (model.visual is not None and k.startswith("visual."))]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise InputError(
            f"--init-from {path} does not fit this Video branch (head/temporal settings differ?): "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {shapes[:4]}"
        )
    model.load_state_dict(state, strict=False)
    log.info("initialised from %s (%d tensors)", path, len(state))
