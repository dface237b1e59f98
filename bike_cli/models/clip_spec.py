"""`ClipSpec`: what a feature cache or checkpoint records about the CLIP model that made it."""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
from torch import nn

from bike_cli.models.preprocess import PreprocessSpec


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
    """The `ClipSpec` of a loaded model of registered architecture `name`."""
    pre = PreprocessSpec.from_model(model.visual)
    return ClipSpec(
        model_name=name,
        pretrained=pretrained,
        checkpoint_sha256=sha256,
        quick_gelu=quick_gelu,
        image_size=pre.image_size,
        mean=pre.mean,
        std=pre.std,
        embed_dim=int(open_clip.get_model_config(name)["embed_dim"]),
        interpolation=pre.interpolation,
        resize_mode=pre.resize_mode,
    )
