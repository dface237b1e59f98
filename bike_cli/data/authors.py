"""The authors' data rules (github whwu95/BIKE, `datasets/video.py`, `datasets/transforms.py`, `test.py`).

Used under `--compat authors`; the paper reading's rules are in `bike_cli.data.sampling`.

Frame indices of a video of `n` frames, `T` frames per clip:

- test (`_get_test_indices`, uniform): `tick = n / T`; clip starts `linspace(0, tick - 1, C)` cast
  to int (towards zero, as numpy 1.x did); frame `x` of the clip starting at `s` is `int(s + tick * x) % n`. One clip starts at 0
  (the segment starts, not their centres);
- train (`_sample_indices`): segments of `(n - 1) / T` frames with rounded bounds; a uniformly
  random frame in `[round(seg * i), round(seg * (i + 1))]`, both ends included.

Test transform: the short side is resized to 256 px for a 224 px input and to the input size
otherwise (`GroupScale`, PIL bicubic, long side `int(scale * long / short)` as torchvision computes
it), then one centre crop (`GroupCenterCrop`: torchvision's rounding), three crops as
`GroupFullResSample` (steps of `(W - size) // 4` and `(H - size) // 4` on the resized frame; order
left, right, centre; no flips), or five / ten as `GroupOverSample` (the offsets of
`GroupMultiScaleCrop.fill_fix_offset(False, ...)` on the same steps: upper left, upper right, lower
left, lower right, centre; ten adds after each crop its left-right mirror image).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from bike_cli.config.profile import AUTHORS_CROPS  # test.py --test_crops
from bike_cli.errors import InputError


def authors_test_indices(num_frames: int, frames: int, clips: int = 1) -> np.ndarray:
    """int64 [clips, frames] frame indices of the authors' test sampling."""
    if num_frames < 1:
        raise InputError(f"cannot sample from a video with {num_frames} frames")
    tick = num_frames / float(frames)
    # [C]: linspace(..., dtype=int) truncated towards zero up to numpy 1.x (the authors' numpy); numpy 2
    # floors, which differs for videos shorter than T frames (a negative start)
    starts = [int(v) for v in np.linspace(0, tick - 1, num=clips).tolist()]
    rows = [[int(start + tick * x) % num_frames for x in range(frames)] for start in starts]
    return np.array(rows, dtype=np.int64)


def authors_train_indices(num_frames: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """int64 [frames]: one random frame per segment of (n - 1) / T frames, rounded bounds included."""
    if num_frames < 1:
        raise InputError(f"cannot sample from a video with {num_frames} frames")
    seg = float(num_frames - 1) / frames
    bounds = [(int(np.round(seg * i)), int(np.round(seg * (i + 1)))) for i in range(frames)]
    return np.array([rng.integers(lo, hi + 1) for lo, hi in bounds], dtype=np.int64)


def authors_scale_size(input_size: int) -> int:
    """Short side of the resized test frame: 256 for a 224 px input, else the input size (test.py)."""
    return 256 if input_size == 224 else input_size


def authors_resized_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """(H, W) with the short side `scale` and the long side int(scale * long / short)."""
    if height <= width:
        return scale, int(scale * width / height)
    return int(scale * height / width), scale


def authors_crop_boxes(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the authors' test crops on a resized frame of height x width."""
    if height < size or width < size:
        raise InputError(f"frame {height}x{width} is smaller than the crop size {size}")
    if crops == 1:  # torchvision CenterCrop
        return [(int(round((height - size) / 2.0)), int(round((width - size) / 2.0)))]
    w_step, h_step = (width - size) // 4, (height - size) // 4
    if crops == 3:  # GroupFullResSample: left, right, centre
        return [(2 * h_step, 0), (2 * h_step, 4 * w_step), (2 * h_step, 2 * w_step)]
    if crops in (5, 10):  # GroupOverSample: fill_fix_offset's five; ten: each box again, for its flip
        five = [(0, 0), (0, 4 * w_step), (4 * h_step, 0), (4 * h_step, 4 * w_step), (2 * h_step, 2 * w_step)]
        return five if crops == 5 else [box for box in five for _ in range(2)]
    raise InputError(f"the authors' test transform takes 1, 3, 5 or 10 crops, not {crops}")


def authors_flips(crops: int) -> list[bool]:
    """Per view of `authors_crop_boxes`: True where the crop is mirrored left-right (10 crops: every second)."""
    if crops not in AUTHORS_CROPS:
        raise InputError(f"the authors' test transform takes 1, 3, 5 or 10 crops, not {crops}")
    return [crops == 10 and v % 2 == 1 for v in range(crops)]


def authors_views(frames: torch.Tensor, size: int, crops: int) -> torch.Tensor:
    """The authors' test transform of full-size frames.

    frames: uint8 [N, H, W, 3]  ->  uint8 [S, N, 3, size, size]
    """
    _, height, width, _ = frames.shape
    new_h, new_w = authors_resized_size(height, width, authors_scale_size(size))
    resized = np.stack([
        np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.BICUBIC)) for frame in frames.numpy()
    ])  # [N, h, w, 3]
    chw = torch.from_numpy(resized).permute(0, 3, 1, 2)  # [N, 3, h, w]
    boxes = authors_crop_boxes(new_h, new_w, size, crops)
    out = [chw[:, :, y : y + size, x : x + size] for y, x in boxes]  # S x [N, 3, size, size]
    out = [view.flip(-1) if flip else view for view, flip in zip(out, authors_flips(crops))]  # mirror the columns
    return torch.stack(out).contiguous()
