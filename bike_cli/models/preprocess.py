"""A model's image preprocessing, read from the model itself (what feature caches record).

open_clip sets a model's preprocess config from its pretrained tag. A checkpoint file or random
weights carry none, so bike gives them what every pretrained tag of the architecture agrees on
(`agreed_preprocess`: SigLIP's mean/std 0.5 and squash, MobileCLIP's [0, 1] input, ...), key by key;
where the tags disagree (ViT-L-14: OpenAI vs 0.5 mean/std) open_clip's defaults stay.
See `bike_cli.data.sampling` for how bike's views use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import open_clip

RESIZE_MODES = ("shortest", "squash", "longest")
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def agreed_preprocess(name: str) -> dict[str, Any]:
    """The preprocess settings on which all pretrained tags of architecture `name` agree ({} if none)."""
    cfgs = [open_clip.get_pretrained_cfg(name, tag) for tag in open_clip.list_pretrained_tags_by_model(name)]
    agreed = {}
    for key in PREPROCESS_KEYS:
        values = {tuple(c[key]) if isinstance(c.get(key), (list, tuple)) else c.get(key) for c in cfgs}
        if len(values) == 1 and None not in values:
            agreed[key] = next(iter(values))
    return agreed


@dataclass(frozen=True)
class PreprocessSpec:
    """A model's image preprocessing: square input side, normalisation, interpolation, resize mode."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_model(cls, visual: Any) -> PreprocessSpec:
        """Read from an open_clip image tower (`model.visual`: `image_size`, `preprocess_cfg`); ValueError for
        a tower bike cannot feed (not square, an unknown resize mode)."""
        size = visual.image_size
        height, width = (size, size) if isinstance(size, int) else size
        if height != width:
            raise ValueError(f"the model takes {height}x{width} images; bike needs a square input")
        cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
        mode = cfg.get("resize_mode", "shortest")
        if mode not in RESIZE_MODES:
            raise ValueError(f"the model's resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
        return cls(
            image_size=int(height),
            mean=tuple(float(v) for v in visual.image_mean),
            std=tuple(float(v) for v in visual.image_std),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            resize_mode=mode,
        )
