"""uint8 video frames -> CLIP frame embeddings with the one pixel normalisation (`FrameEncoder`: extract-features,
eval `--videos`, predict), and one process's share of extract-features (`extract_share`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bike_cli.data.clip_dataset import ClipBatch, MultiViewClips, collate_items, merge_batches
from bike_cli.data.video_lists import VideoList, labels_array
from bike_cli.engine.runtime import DistContext, autocast_for
from bike_cli.io.feature_cache import Batch, CacheMeta, Failure, PartWriter
from bike_cli.models.clip import ClipSpec
from bike_cli.models.video_branch import image_features
from bike_cli.progress import Progress

log = logging.getLogger(__name__)

# Frames per encode_image call: bounds activation memory whatever the batch and view settings.
FRAMES_PER_FORWARD = 512


def to_unit_pixels(pixels: torch.Tensor, spec: ClipSpec, device: torch.device) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> float32 [..., 3, S, S] on `device`: (x / 255 - mean) / std, the model's input."""
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=device).view(3, 1, 1) * 255.0
    return (pixels.to(device, non_blocking=True).float() - mean) / std


class FrameEncoder:
    """uint8 frames -> CLIP image embeddings (not normalised) of `model.visual` (a CLIP model's or a Video
    branch's tower), in chunks of FRAMES_PER_FORWARD on `device`, autocast by `precision`, channels-last on CUDA."""

    def __init__(self, model: torch.nn.Module, spec: ClipSpec, device: torch.device, precision: str = "auto") -> None:
        self.visual = model.visual.to(device).eval()
        if device.type == "cuda":
            self.visual = self.visual.to(memory_format=torch.channels_last)
        self.spec, self.device, self.precision = spec, device, precision  # precision: auto, fp32, bf16 or fp16

    @torch.inference_mode()
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S, S] -> float32 [..., D] on the device."""
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])  # [N, 3, S, S]
        out = []
        for start in range(0, flat.shape[0], FRAMES_PER_FORWARD):
            chunk = to_unit_pixels(flat[start : start + FRAMES_PER_FORWARD], self.spec, self.device)  # [n, 3, S, S]
            if self.device.type == "cuda":
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            with autocast_for(self.device, self.precision):
                out.append(image_features(self.visual, chunk).float())  # [n, D]
        return torch.cat(out).view(*lead, -1)  # [..., D]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S, S] -> float16 [..., D] on the CPU: a feature cache's rows."""
        return self.embed(frames).half().cpu()


def extract_share(dataset: MultiViewClips, encoder: FrameEncoder, parts_dir: Path, video_list: VideoList,
                  meta: CacheMeta, *, batch_size: int, workers: int, dist: DistContext, progress: Progress) -> None:
    """Decode (in `workers` workers) and encode this process's videos, writing one part file per batch."""
    # One video per loader item, so the workers share the videos evenly; the main process groups --batch-size.
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers, collate_fn=collate_items,
                        worker_init_fn=worker_init, pin_memory=encoder.device.type == "cuda", persistent_workers=False,
                        prefetch_factor=max(2, math.ceil(batch_size / workers)) if workers > 0 else None)
    writer = PartWriter(parts_dir, dist.rank)
    if not dist.is_main:
        progress = Progress()  # rank 0 shows the progress, estimated for all processes
    progress.start(len(dataset) * dist.world_size, "extracting")
    pending: list[ClipBatch] = []
    try:
        for i, item in enumerate(loader, start=1):
            pending.append(item)
            if len(pending) == batch_size or i == len(dataset):
                writer.write(encode_batch(merge_batches(pending), encoder, video_list, meta))
                progress.advance(len(pending) * dist.world_size)
                pending = []
    finally:
        progress.stop()


def encode_batch(batch: ClipBatch, encoder: FrameEncoder, video_list: VideoList, meta: CacheMeta) -> Batch:
    """A decoded batch -> the rows of one part file: embeddings [B, V, T, D] float16, labels, failures."""
    ok, failed = batch.ok, list(batch.failed)
    if batch.frames is not None:
        emb = encoder(batch.frames).numpy()  # [B, V, T, D] float16
        finite = np.isfinite(emb.reshape(len(ok), -1)).all(1)  # [B]: the cache holds finite rows only
        if not finite.all():
            for item in (item for item, good in zip(ok, finite) if not good):
                item.error = (f"its frame embeddings hold NaN or infinity (--precision {encoder.precision}): "
                              "check the model's weights, or try --precision fp32")
                failed.append(item)
            ok, emb = [item for item, good in zip(ok, finite) if good], emb[finite]
    else:
        emb = np.zeros((0, meta.num_views, meta.frames, meta.embed_dim), dtype=np.float16)
    for item in failed:
        log.warning("skipped %s: %s", item.entry.video_id, item.error)
    return Batch(
        list_index=np.array([i.list_index for i in ok], dtype=np.int64), video_ids=[i.entry.video_id for i in ok],
        embeddings=emb, num_frames=np.array([i.num_frames for i in ok], dtype=np.int64),
        labels=labels_array([video_list.entries[i.list_index] for i in ok], meta.num_classes, video_list.multilabel),
        decoders=[i.decoder for i in ok],
        failures=[Failure(i.list_index, i.entry.video_id, str(i.entry.path), i.error or "") for i in failed])


def worker_init(_: int) -> None:
    """A loader worker's torch: one thread (decoding threads, not BLAS threads, do the work in workers)."""
    torch.set_num_threads(1)
