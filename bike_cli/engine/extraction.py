"""One process's share of `extract-features`: decode its videos (in loader workers), encode them, and
write one part file per batch (`bike_cli.io.feature_cache`); rank 0's stage merges the parts."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bike_cli.data.clip_dataset import ClipBatch, MultiViewClips, collate_items, merge_batches
from bike_cli.data.video_lists import VideoList, labels_array
from bike_cli.engine.distributed import DistContext
from bike_cli.engine.frame_encoder import FrameEncoder
from bike_cli.io.feature_cache import Batch, CacheMeta, Failure, PartWriter
from bike_cli.progress import Progress

log = logging.getLogger(__name__)


def extract_share(dataset: MultiViewClips, encoder: FrameEncoder, parts_dir: Path, video_list: VideoList,
                  meta: CacheMeta, *, batch_size: int, workers: int, dist: DistContext, progress: Progress) -> None:
    """Decode (in `workers` workers) and encode this process's videos, writing one part file per batch."""
    # One video per loader item, so that the workers share the videos evenly (a batch per worker
    # would leave one worker decoding the odd batch alone); the main process groups --batch-size
    # videos for the model and the part file.
    loader = DataLoader(
        dataset, batch_size=1, shuffle=False, num_workers=workers,
        collate_fn=collate_items, worker_init_fn=worker_init, pin_memory=encoder.device.type == "cuda",
        prefetch_factor=max(2, math.ceil(batch_size / workers)) if workers > 0 else None,
        persistent_workers=False,
    )
    writer = PartWriter(parts_dir, dist.rank)
    if not dist.is_main:
        progress = Progress()  # rank 0 shows the progress, estimated for all processes
    progress.start(len(dataset) * dist.world_size, "extracting")
    pending: list[ClipBatch] = []
    try:
        for i, item in enumerate(loader, start=1):
            pending.append(item)
            if len(pending) == batch_size or i == len(dataset):
                batch = merge_batches(pending)
                writer.write(encode_batch(batch, encoder, video_list, meta))
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
        list_index=np.array([i.list_index for i in ok], dtype=np.int64),
        video_ids=[i.entry.video_id for i in ok],
        embeddings=emb,
        labels=labels_array([video_list.entries[i.list_index] for i in ok], meta.num_classes, video_list.multilabel),
        num_frames=np.array([i.num_frames for i in ok], dtype=np.int64),
        decoders=[i.decoder for i in ok],
        failures=[Failure(i.list_index, i.entry.video_id, str(i.entry.path), i.error or "") for i in failed],
    )


def worker_init(_: int) -> None:
    """A loader worker's torch: one thread (decoding threads, not BLAS threads, do the work in workers)."""
    torch.set_num_threads(1)
