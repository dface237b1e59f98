"""Small labelled videos made by bike itself, for the demo and the tests: a shape moving across a noisy
background. Pairs of classes differ only in the direction of motion, so a model that ignores frame order
(mean pooling) cannot tell them apart while a temporal head can."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from bike_cli.errors import InputError
from bike_cli.io.atomic import atomic_write

logger = logging.getLogger(__name__)

SAMPLE_CLASSES: tuple[str, ...] = (
    "square moving right",
    "square moving left",
    "circle moving down",
    "circle moving up",
)

# class index -> (shape, unit direction (dy, dx), base RGB colour)
_CLASS_SPECS: tuple[tuple[str, tuple[int, int], tuple[int, int, int]], ...] = (
    ("square", (0, 1), (220, 60, 50)),
    ("square", (0, -1), (220, 60, 50)),
    ("circle", (1, 0), (50, 90, 220)),
    ("circle", (-1, 0), (50, 90, 220)),
)


@dataclass(frozen=True)
class SampleDataset:
    """Where `make_sample_dataset` wrote the dataset, and how many videos each list holds."""

    root: Path  # the output folder; list paths are relative to it
    classes: Path  # classes.csv: `id,name`
    train: Path  # train.csv: `path,label`
    val: Path  # val.csv: `path,label`
    num_classes: int
    num_train: int
    num_val: int


def write_video(
    path: str | Path, frames: np.ndarray | torch.Tensor, fps: int = 25, codec: str = "mpeg4"
) -> Path:
    """Encode uint8 frames [T, H, W, 3] (H, W even) to `path` with PyAV (yuv420p); return the path."""
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise InputError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {array.dtype} {list(array.shape)}")
    if array.shape[1] % 2 or array.shape[2] % 2:
        raise InputError(f"frame height and width must be even, got {array.shape[1]}x{array.shape[2]}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _, height, width, _ = array.shape
    with av.open(str(out), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # generous bit rate: the test patterns (grey levels) must survive the round trip closely
        stream.codec_context.bit_rate = max(2_000_000, 3 * height * width * fps)
        for index, rgb in enumerate(array):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out


def _trajectory(
    rng: np.random.Generator, direction: tuple[int, int], num_frames: int, size: tuple[int, int], radius: int
) -> np.ndarray:
    """Shape centres [T, 2] (y, x): a random start and speed along `direction`, staying in frame."""
    centres = np.empty((num_frames, 2))
    for axis, step in enumerate(direction):
        low, high = radius, size[axis] - 1 - radius
        if step == 0:  # across the motion: a fixed random position
            centres[:, axis] = rng.uniform(low, high)
            continue
        travel = rng.uniform(0.5, 1.0) * (high - low)  # pixels covered over the clip
        start = rng.uniform(low, high - travel)
        path = start + travel * np.linspace(0.0, 1.0, num_frames)
        centres[:, axis] = path if step > 0 else (low + high) - path
    return centres


def render_sample(
    class_index: int, rng: np.random.Generator, num_frames: int = 32, size: tuple[int, int] = (96, 128)
) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] of class `class_index` (of SAMPLE_CLASSES): its moving shape on a noisy background."""
    if num_frames < 2 or min(size) < 16:
        raise InputError(f"need num_frames >= 2 and size >= 16x16, got {num_frames} frames of {size}")
    shape, direction, colour = _CLASS_SPECS[class_index]
    height, width = size
    radius = max(3, int(round(min(size) * rng.uniform(0.16, 0.22))))  # large: the class is what fills the frame
    centres = _trajectory(rng, direction, num_frames, size, radius)  # [T, 2]
    # a tinted grey with a static texture, kept away from the saturated shape colours
    tint = rng.uniform(95.0, 135.0) + rng.uniform(-10.0, 10.0, size=3)  # [3]
    background = tint + rng.normal(0.0, 10.0, size=(height, width, 3))  # [H, W, 3]
    noise = rng.normal(0.0, 4.0, size=(num_frames, height, width, 3))  # [T, H, W, 3]
    yy = np.arange(height)[None, :, None] - centres[:, 0, None, None]  # [T, H, 1]
    xx = np.arange(width)[None, None, :] - centres[:, 1, None, None]  # [T, 1, W]
    if shape == "square":
        mask = np.maximum(np.abs(yy), np.abs(xx)) <= radius  # [T, H, W]
    else:
        mask = yy**2 + xx**2 <= radius**2
    fill = np.asarray(colour) + rng.uniform(-25.0, 25.0, size=3)  # [3]
    frames = np.where(mask[..., None], fill, background[None]) + noise  # [T, H, W, 3]
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _write_csv(path: Path, header: tuple[str, str], rows: list[tuple[object, object]]) -> None:
    """Write a two-column CSV file with a header row."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def make_sample_dataset(out_dir: str | Path, videos_per_class: int = 6, val_fraction: float = 1 / 3,
                        num_frames: int = 32, size: tuple[int, int] = (96, 128), seed: int = 0) -> SampleDataset:
    """Write videos/<class_slug>_<k>.mp4, classes.csv, train.csv and val.csv under `out_dir`.

    The last round(videos_per_class * val_fraction) videos of each class go to val. Video k of class c
    is drawn from a generator seeded with (seed, c, k), so the output is deterministic for a seed.
    """
    if videos_per_class < 1 or not 0.0 <= val_fraction < 1.0:
        raise InputError(
            f"need videos_per_class >= 1 and 0 <= val_fraction < 1, got {videos_per_class}, {val_fraction}"
        )
    root = Path(out_dir)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    num_val = round(videos_per_class * val_fraction)
    train_rows: list[tuple[object, object]] = []
    val_rows: list[tuple[object, object]] = []
    for class_index, name in enumerate(SAMPLE_CLASSES):
        for k in range(videos_per_class):
            rng = np.random.default_rng([seed, class_index, k])
            relative = f"videos/{'_'.join(name.lower().split())}_{k}.mp4"  # square_moving_right_0.mp4
            write_video(root / relative, render_sample(class_index, rng, num_frames, size))
            (val_rows if k >= videos_per_class - num_val else train_rows).append((relative, name))
    dataset = SampleDataset(root=root, classes=root / "classes.csv", train=root / "train.csv", val=root / "val.csv",
                            num_classes=len(SAMPLE_CLASSES), num_train=len(train_rows), num_val=len(val_rows))
    _write_csv(dataset.classes, ("id", "name"), list(enumerate(SAMPLE_CLASSES)))
    _write_csv(dataset.train, ("path", "label"), train_rows)
    _write_csv(dataset.val, ("path", "label"), val_rows)
    logger.info("wrote %d train and %d val videos to %s", dataset.num_train, dataset.num_val, root)
    return dataset
