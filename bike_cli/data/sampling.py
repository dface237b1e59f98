"""Which frames and which crops a clip is made of, under the paper reading and the authors' code
(`authors_*`: github whwu95/BIKE `datasets/video.py`, `datasets/transforms.py`, `test.py`); few-shot sets.

TSN sampling cuts a video of `n` frames into `T` segments of `n / T`: test clip `c` of `C` takes the
frame at offset `(c + 0.5) / C` of each segment; training one random frame per segment, seeded per
video. Views: `S = 1` centre or `S = 3` start, centre, end crops along the long side of a short-side
resize (the authors' also 5 and 10); the single view `Cx1` follows the model's open_clip `resize_mode`
(`squash`, `longest`: a squashed frame has no three crops). The rules by name (`TEST_INDICES`,
`TRAIN_INDICES`, `TEST_TRANSFORMS`) are what `Profile` fields name; each index rule returns int64
[clips, frames]. The cache's sampling, both profiles: docs/formats.md, "Feature cache".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bike_cli.config.profile import (
    AUTHORS_CROPS,  # test.py --test_crops
    DECODE_RESIZE,
    DEFAULT_PROFILE,
    PIL_SCALE,
    ROUNDED_SEGMENTS,
    SEGMENT_CENTRES,
    SEGMENT_UNIFORM,
    TICK_STARTS,
    Profile,
)
from bike_cli.errors import InputError

SAMPLING_MODES = ("test", "train")


@dataclass(frozen=True)
class ViewLayout:
    """`C x S` views: C temporal clips times S spatial crops; view v = c * S + s."""

    clips: int
    crops: int

    @property
    def num_views(self) -> int:
        return self.clips * self.crops


MAX_CLIPS = 64  # temporal clips per video: beyond this one video's pixels alone fill the memory


# What --views says of a crop count the profile's test transform does not take (Profile.test_transform)
CROPS_REFUSED = {DECODE_RESIZE: "the number of spatial crops must be {allowed}, not {crops}{hint}",
                 PIL_SCALE: "the authors' test transform takes {allowed} spatial crops, not {crops}"}


def parse_views(text: str, profile: Profile = DEFAULT_PROFILE) -> ViewLayout:
    """Parse `CxS` (e.g. `4x3`); S must be one of the profile's crop counts (the paper reading's 1 or 3; the authors'
    also 5 or 10, as their test.py)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise InputError(f"views {text!r} is not of the form CxS (for example 1x1 or 4x3)")
    clips, crops = int(match.group(1)), int(match.group(2))
    if clips < 1:
        raise InputError(f"views {text!r}: the number of temporal clips must be at least 1")
    if clips > MAX_CLIPS:
        raise InputError(f"views {text!r}: at most {MAX_CLIPS} temporal clips (the paper uses up to 4)")
    if crops not in profile.crops:
        *most, last = map(str, profile.crops)
        allowed = f"{', '.join(most)} or {last}" if most else last
        hint = " (5 and 10 are the authors' crops: --compat authors)" if crops in AUTHORS_CROPS else ""
        raise InputError(f"views {text!r}: " + CROPS_REFUSED[profile.test_transform].format(
            allowed=allowed, crops=crops, hint=hint))
    return ViewLayout(clips, crops)


def video_seed(seed: int, video_id: str) -> int:
    """A per-video seed that depends only on the run seed and the video id."""
    digest = hashlib.blake2b(f"{seed}:{video_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def segment_indices(num_frames: int, frames: int, *, mode: str = "test", clips: int = 1,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices of `clips` TSN clips of `frames` frames each: int64 [clips, frames]."""
    if num_frames < 1:
        raise InputError(f"cannot sample from a video with {num_frames} frames")
    if mode not in SAMPLING_MODES:
        raise InputError(f"sampling mode {mode!r} is not one of {', '.join(SAMPLING_MODES)}")
    seg_len = num_frames / frames
    starts = np.arange(frames) * seg_len  # [T]
    if mode == "test":
        offsets = (np.arange(clips) + 0.5) / clips  # [C]
        positions = starts[None, :] + offsets[:, None] * seg_len  # [C, T]
    else:  # train: `rng` given
        positions = starts[None, :] + rng.random((clips, frames)) * seg_len
    return np.clip(np.floor(positions).astype(np.int64), 0, num_frames - 1)


def crop_boxes(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of `crops` square `size` crops along the long side (min(H, W) >= size)."""
    if crops == 1:
        return [((height - size) // 2, (width - size) // 2)]
    if width >= height:  # landscape: left, centre, right
        y = (height - size) // 2
        return [(y, 0), (y, (width - size) // 2), (y, width - size)]
    x = (width - size) // 2  # portrait: top, centre, bottom
    return [(0, x), ((height - size) // 2, x), (height - size, x)]


def spatial_crops(frames: torch.Tensor, size: int, crops: int) -> torch.Tensor:
    """Square crops of short-side-resized frames.

    frames: uint8 [N, H, W, 3] with min(H, W) == size  ->  uint8 [S, N, 3, size, size]
    """
    _, height, width, _ = frames.shape
    chw = frames.permute(0, 3, 1, 2)  # [N, 3, H, W]
    out = [chw[:, :, y : y + size, x : x + size] for y, x in crop_boxes(height, width, size, crops)]
    return torch.stack(out).contiguous()


def authors_test_indices(num_frames: int, frames: int, clips: int = 1) -> np.ndarray:
    """int64 [clips, frames] frame indices of the authors' test sampling."""
    tick = num_frames / float(frames)
    # [C]: linspace(..., dtype=int) truncated towards zero up to numpy 1.x (the authors' numpy); numpy 2
    # floors, which differs for videos shorter than T frames (a negative start)
    starts = [int(v) for v in np.linspace(0, tick - 1, num=clips).tolist()]
    rows = [[int(start + tick * x) % num_frames for x in range(frames)] for start in starts]
    return np.array(rows, dtype=np.int64)


def authors_train_indices(num_frames: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """int64 [frames]: one random frame per segment of (n - 1) / T frames, rounded bounds included."""
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
    """Top-left corners (y, x) of the authors' test crops on a frame of height x width resized to cover size."""
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


TEST_INDICES: dict[str, Callable[[int, int, int], np.ndarray]] = {
    SEGMENT_CENTRES: lambda num_frames, frames, clips: segment_indices(num_frames, frames, mode="test", clips=clips),
    TICK_STARTS: authors_test_indices,
}

TRAIN_INDICES: dict[str, Callable[[int, int, int, np.random.Generator], np.ndarray]] = {
    SEGMENT_UNIFORM: lambda num_frames, frames, clips, rng: segment_indices(
        num_frames, frames, mode="train", clips=clips, rng=rng),
    ROUNDED_SEGMENTS: lambda num_frames, frames, clips, rng: np.stack(
        [authors_train_indices(num_frames, frames, rng) for _ in range(clips)]),
}


def clip_indices(profile: Profile, mode: str, num_frames: int, frames: int, clips: int, seed: int,
                 video_id: str) -> np.ndarray:
    """int64 [C, T]: the frames a `mode` ("test", or "train" seeded per video) layout samples under `profile`."""
    if mode == "train":
        rng = np.random.default_rng(video_seed(seed, video_id))
        return TRAIN_INDICES[profile.train_indices](num_frames, frames, clips, rng)
    return TEST_INDICES[profile.test_indices](num_frames, frames, clips)


def few_shot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted row indices holding `shots` videos of every class (all of a class when it has fewer).

    labels: int [N] (single-label; -1 rows are never picked) or multi-hot [N, K] (a video counts for
    each of its classes). The draw for class k depends only on (seed, k) and the class's rows, so
    adding classes or reordering work leaves the other classes' picks unchanged.
    """
    if shots < 1:
        raise InputError(f"--shots must be at least 1, not {shots}")
    hot = labels.astype(bool) if labels.ndim == 2 else None
    num_classes = hot.shape[1] if hot is not None else int(labels.max()) + 1 if len(labels) else 0
    chosen: set[int] = set()
    for k in range(num_classes):
        rows = np.flatnonzero(hot[:, k] if hot is not None else labels == k)
        if len(rows) == 0:
            continue
        rng = np.random.default_rng([seed, k])
        chosen.update(rng.choice(rows, size=min(shots, len(rows)), replace=False).tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def shot_list_indices(video_ids: Sequence[str], shots_list: str | Path, where: str) -> np.ndarray:
    """Sorted indices in `video_ids` of the videos a published K-shot list names (ViFi-CLIP's
    `train1_few_shot_K.txt`: `video.avi label`, or any video list bike reads). Its labels are not used (a
    video's label is the training set's); its videos are matched as `match_videos` does (id, else file
    stem), a listed video missing from `where` being an InputError naming it."""
    from bike_cli.data.video_lists import match_videos, read_video_list

    listed = [entry.video_id for entry in read_video_list(shots_list).entries]
    return np.sort(match_videos(listed, video_ids, f"--shots-list {shots_list}", where))


def view_resize_mode(resize_mode: str, crops: int) -> str:
    """The resize mode a view layout uses: the model's (checked by models.clip) for one crop, else shortest."""
    return resize_mode if crops == 1 else "shortest"


def square_views(frames: torch.Tensor, size: int, crops: int, resize_mode: str) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] resized by `read_frames(resize=view_resize_mode(...))` -> [S, N, 3, s, s].

    shortest: `crops` square crops; squash: the frames as they are (already s x s); longest: the
    frames centred on a black s x s canvas."""
    mode = view_resize_mode(resize_mode, crops)
    if mode == "shortest":
        return spatial_crops(frames, size, crops)
    chw = frames.permute(0, 3, 1, 2)  # [N, 3, H, W]
    height, width = chw.shape[-2:]
    if mode == "longest":
        top, left = (size - height) // 2, (size - width) // 2
        chw = F.pad(chw, (left, size - width - left, top, size - height - top))  # zeros = black
    return chw.unsqueeze(0).contiguous()  # [1, N, 3, s, s]


@dataclass(frozen=True)
class TestTransform:
    """How test frames become views (`Profile.test_transform`): decoded at the model's size or at their
    own, then `views(frames [T, H, W, 3] uint8, size, crops, resize_mode) -> [S, T, 3, size, size]`."""

    full_size: bool  # decode at the frames' own size (the transform resizes them itself)
    views: Callable[[torch.Tensor, int, int, str], torch.Tensor]


TEST_TRANSFORMS: dict[str, TestTransform] = {
    DECODE_RESIZE: TestTransform(False, square_views),  # short side resized while decoding, square crops
    PIL_SCALE: TestTransform(True, lambda frames, size, crops, resize_mode: authors_views(frames, size, crops)),
}
