"""What both backends share: the clip they return, the output size, the requested indices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bike_cli.errors import InputError

RESIZES = ("shortest", "squash", "longest")

IndexChooser = Callable[[int], Sequence[int]]


@dataclass
class DecodedClip:
    """Frames decoded from one video, in the order of the requested indices."""

    frames: torch.Tensor  # uint8 [N, H, W, 3]
    num_frames: int  # frames in the video as the backend counted them
    decoder: str  # 'decord' or 'pyav'
    height: int  # H of `frames`
    width: int  # W of `frames`


def resized_size(height: int, width: int, short_side: int | None, resize: str = "shortest") -> tuple[int, int]:
    """(H, W) with the shorter side equal to `short_side` and the aspect kept (long side rounded);
    `resize="squash"`: `short_side` x `short_side`; `"longest"`: the longer side equal to it."""
    if short_side is None:
        return height, width
    if resize == "squash":
        return short_side, short_side
    if resize == "longest":
        if height >= width:
            return short_side, max(1, int(width * short_side / height + 0.5))
        return max(1, int(height * short_side / width + 0.5)), short_side
    if height <= width:
        return short_side, int(width * short_side / height + 0.5)
    return int(height * short_side / width + 0.5), short_side


def requested_indices(choose_indices: IndexChooser, num_frames: int) -> np.ndarray:
    """Call the sampler with the frame count; return its indices [N] clamped to num_frames - 1."""
    indices = np.asarray(choose_indices(num_frames))
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise InputError(
            f"choose_indices({num_frames}) must return a non-empty list of ints, got {indices!r}"
        )
    if indices.min() < 0:
        raise InputError(f"choose_indices({num_frames}) returned a negative index: {indices.tolist()}")
    return np.minimum(indices.astype(np.int64), num_frames - 1)


def gather(
    requested: np.ndarray, limit: int, fetch: Callable[[list[int]], np.ndarray]
) -> torch.Tensor:
    """Fetch each distinct index (clamped to `limit`) once, in sorted order, with one `fetch` call;
    return the frames [N, H, W, 3] in the order of `requested`."""
    unique, inverse = np.unique(np.minimum(requested, limit), return_inverse=True)
    batch = torch.from_numpy(np.ascontiguousarray(fetch(unique.tolist())))  # [U, H, W, 3]
    return batch[torch.from_numpy(inverse.reshape(-1))]
