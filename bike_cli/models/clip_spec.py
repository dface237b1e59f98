"""`ClipSpec`: what a feature cache or checkpoint records about the CLIP model that made it, its image
preprocessing included (read from the model itself; `bike_cli.data.views` uses it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import open_clip
from torch import nn

RESIZE_MODES = ("shortest", "squash", "longest")
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@dataclass(frozen=True)
class ClipSpec:
    """What a feature cache records about the model that made it."""

    model_name: str
    pretrained: str  # tag, 'none', or the checkpoint path as given
    checkpoint_sha256: str | None  # sha256 of the checkpoint file when pretrained is a path
    quick_gelu: bool
    image_size: int  # square input side (model.visual.image_size)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int
    interpolation: str = "bicubic"  # the model's preprocess config (recorded; bike resizes in the decoder)
    resize_mode: str = "shortest"  # shortest / squash / longest: how the centre view is made


def make_spec(model: nn.Module, name: str, pretrained: str, sha256: str | None, quick_gelu: bool) -> ClipSpec:
    """The `ClipSpec` of a loaded model of registered architecture `name`, its preprocessing read from its image
    tower (`image_size`, `preprocess_cfg`); ValueError for one bike cannot feed (not square, unknown resize mode)."""
    visual = model.visual
    size = visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    if height != width:
        raise ValueError(f"the model takes {height}x{width} images; bike needs a square input")
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    mode = cfg.get("resize_mode", "shortest")
    if mode not in RESIZE_MODES:
        raise ValueError(f"the model's resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    return ClipSpec(model_name=name, pretrained=pretrained, checkpoint_sha256=sha256, quick_gelu=quick_gelu,
                    image_size=int(height), mean=tuple(float(v) for v in visual.image_mean),
                    std=tuple(float(v) for v in visual.image_std),
                    embed_dim=int(open_clip.get_model_config(name)["embed_dim"]),
                    interpolation=str(cfg.get("interpolation", "bicubic")), resize_mode=mode)


def agreed_preprocess(name: str) -> dict[str, Any]:
    """The preprocess settings on which all pretrained tags of architecture `name` agree ({} if none).

    What a weights file or random init (which carry none) gets: SigLIP's mean/std 0.5 and squash,
    MobileCLIP's [0, 1] input, ...; where the tags disagree (ViT-L-14) open_clip's defaults stay."""
    cfgs = [open_clip.get_pretrained_cfg(name, tag) for tag in open_clip.list_pretrained_tags_by_model(name)]
    agreed = {}
    for key in PREPROCESS_KEYS:
        values = {tuple(c[key]) if isinstance(c.get(key), (list, tuple)) else c.get(key) for c in cfgs}
        if len(values) == 1 and None not in values:
            agreed[key] = next(iter(values))
    return agreed
