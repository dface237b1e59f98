"""A model's image preprocessing, read from the model itself (what feature caches record).

See `bike_cli.data.views` for how bike's views use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bike_cli.errors import ModelLoadError

RESIZE_MODES = ("shortest", "squash", "longest")


@dataclass(frozen=True)
class PreprocessSpec:
    """A model's image preprocessing: square input side, normalisation, interpolation, resize mode."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_model(cls, visual: Any) -> "PreprocessSpec":
        """Read from an open_clip image tower (`model.visual`: `image_size`, `preprocess_cfg`)."""
        size = visual.image_size
        height, width = (size, size) if isinstance(size, int) else size
        if height != width:
            raise ModelLoadError(f"the model takes {height}x{width} images; bike needs a square input")
        cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
        mode = cfg.get("resize_mode", "shortest")
        if mode not in RESIZE_MODES:
            raise ModelLoadError(f"the model's resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
        return cls(
            image_size=int(height),
            mean=tuple(float(v) for v in visual.image_mean),
            std=tuple(float(v) for v in visual.image_std),
            interpolation=str(cfg.get("interpolation", "bicubic")),
            resize_mode=mode,
        )
