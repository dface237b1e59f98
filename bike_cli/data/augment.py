"""Train-time augmentation of a clip: one random resized crop, flip and grayscale for all its frames.

The paper's end-to-end training augments each clip with a random resized crop (torchvision
`RandomResizedCrop` semantics: area scale in [scale_min, 1], aspect ratio in [3/4, 4/3] drawn
log-uniformly, up to 10 tries, then a centre crop of the largest allowed aspect), a horizontal flip
and a conversion to grayscale (ITU-R 601-2 luma, 3 channels kept). The parameters are drawn once per
clip from the numpy Generator the caller passes, so every frame gets the same crop and the result is
reproducible from the generator's seed.

Frames stay uint8: the crop and resize are one `resized_crop` call for the whole clip on uint8
(torchvision's native uint8 bilinear antialias path on CPU, ~8x faster than through float).
Horizontal flips swap left and right: turn them off (flip_prob=0) for datasets whose labels name a
direction (Something-Something's "pushing something from left to right").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from bike_cli.errors import InputError

RATIO = (3 / 4, 4 / 3)  # aspect ratio (w / h) range of the random resized crop
CROP_TRIES = 10


def random_resized_box(
    height: int, width: int, rng: np.random.Generator, scale_min: float = 0.08
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop: area fraction in [scale_min, 1], aspect in RATIO.

    Up to CROP_TRIES draws; when none fits inside the frame, the centre crop of the whole frame
    with its aspect clamped to RATIO."""
    area = height * width
    log_low, log_high = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(CROP_TRIES):
        target = area * rng.uniform(scale_min, 1.0)
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    aspect = width / height
    if aspect < RATIO[0]:  # too tall: full width
        w, h = width, int(round(width / RATIO[0]))
    elif aspect > RATIO[1]:  # too wide: full height
        w, h = int(round(height * RATIO[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass
class ClipAugment:
    """Random resized crop to `size` x `size`, horizontal flip and grayscale, the same for every frame."""

    size: int
    scale_min: float = 0.08
    flip_prob: float = 0.5
    grayscale_prob: float = 0.2

    def __post_init__(self) -> None:
        if self.size < 1:
            raise InputError(f"augmentation size must be a positive number of pixels, got {self.size}")
        if not 0.0 < self.scale_min <= 1.0:
            raise InputError(f"crop scale_min must be in (0, 1], got {self.scale_min}")
        for name in ("flip_prob", "grayscale_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """uint8 frames [T, H, W, 3] (as `read_frames` returns them) -> uint8 [T, 3, size, size].

        Draws, in this order: the crop box, the flip, the grayscale (the last two always drawn)."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        _, height, width, _ = frames.shape
        top, left, h, w = random_resized_box(height, width, rng, self.scale_min)
        flip = rng.random() < self.flip_prob
        gray = rng.random() < self.grayscale_prob
        chw = frames.permute(0, 3, 1, 2)  # [T, 3, H, W], a channels-last view (no copy)
        out = TF.resized_crop(chw, top, left, h, w, [self.size, self.size], antialias=True)  # [T, 3, s, s]
        if flip:
            out = out.flip(-1)
        if gray:
            out = TF.rgb_to_grayscale(out, num_output_channels=3)
        return out.contiguous()
