"""The evaluation loops of `bike eval`: batches of a test set -> per-video class probabilities.

Video branch: the views of a video are scored together by the score rule the stage chose
(`bike_cli.engine.rules.VIDEO_SCORES`, e.g. each view's softmax, averaged); the views come from a
multi-view feature cache or are decoded here (`CxS` views of a video list) and embedded by
`engine.frame_encoder.FrameEncoder`. Attributes branch: S_A =
each attribute sentence's scores by the stage's rule (a train-attrs checkpoint, or without one the
frozen text encoder of the Video branch's CLIP: `models.factory.load_attrs_branch`), rows of one video
averaged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bike_cli.config.profile import Profile, check_same_profile
from bike_cli.data.cached_clips import CachedClips, SlabBatches
from bike_cli.data.clip_dataset import MultiViewClips, collate_items
from bike_cli.data.sampling import ViewLayout
from bike_cli.data.video_lists import read_video_list
from bike_cli.engine.frame_encoder import FrameEncoder
from bike_cli.engine.runtime import cores_beside_workers, loader_workers
from bike_cli.io.attributes_csv import read_attributes_csv
from bike_cli.io.csv_meta import read_csv_compat
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.models.attributes import SENTENCE_BATCH, attribute_scores
from bike_cli.models.factory import AttrsClassifier, VideoClassifier
from bike_cli.models.video_branch import ViewRule
from bike_cli.progress import Progress

log = logging.getLogger(__name__)

Scores = tuple[list[str], np.ndarray, np.ndarray, list[str]]  # video ids, labels, probabilities [N, K], failed ids


@torch.no_grad()
def cache_scores(vm: VideoClassifier, rule: ViewRule, cache: FeatureCache, batch_size: int, device,
                 progress: Progress) -> Scores:
    """The Video branch's scores of every video of a feature cache by `rule` (none fail)."""
    labels, scores = [], []
    dataset = CachedClips(cache, vm.frames, train=False)
    progress.start(len(dataset), "scoring (cache)")
    for frames, target in SlabBatches(dataset, batch_size):  # frames [b, V, T, D], no workers
        scores.append(vm.scores(frames.to(device).float(), rule).cpu().numpy())
        labels.append(target.numpy())
        progress.advance(len(target))
    progress.stop()
    return list(cache.video_ids), np.concatenate(labels), np.concatenate(scores), []


@torch.no_grad()
def decoded_scores(vm: VideoClassifier, rule: ViewRule, videos: Path, root: Path | None, layout: ViewLayout,
                   profile: Profile, batch_size: int, workers: int, device, progress: Progress,
                   kept: list | None = None) -> Scores:
    """The Video branch's scores of the videos of a list by `rule`, `layout` views decoded here; a video
    that cannot be decoded is logged and listed as failed. `kept` collects the frame embeddings
    [b, V, T, D] of every batch, when a protocol needs them."""
    ids, labels, scores, failed = [], [], [], []
    video_list = read_video_list(videos, root=root, class_names=vm.names)
    items = list(enumerate(video_list.entries))
    dataset = MultiViewClips(items, frames=vm.frames, layout=layout, size=vm.spec.image_size,
                             profile=profile, resize_mode=vm.spec.resize_mode)
    per_batch = max(1, batch_size // layout.num_views)
    workers = loader_workers(workers, -(-len(dataset) // per_batch))
    loader = DataLoader(dataset, batch_size=per_batch, num_workers=workers, collate_fn=collate_items)
    progress.start(len(dataset), "scoring (videos)")
    k = vm.texts.pooled.shape[0]
    encoder = FrameEncoder(vm.branch, vm.spec, torch.device(device))
    with cores_beside_workers(device, workers):  # CPU: torch threads beside the loader workers
        for batch in loader:
            failed += [item.entry.video_id for item in batch.failed]
            for item in batch.failed:
                log.warning("not scored: %s: %s", item.entry.video_id, item.error)
            if batch.frames is not None:
                emb = encoder.embed(batch.frames)  # [b, V, T, D]
                scores.append(vm.scores(emb, rule).cpu().numpy())
                if kept is not None:
                    kept.append(emb.cpu())
                for item in batch.ok:
                    ids.append(item.entry.video_id)
                    if video_list.multilabel:
                        hot = np.zeros(k, dtype=np.uint8)
                        hot[list(item.entry.labels)] = 1
                        labels.append(hot[None])
                    else:
                        labels.append(np.array([item.entry.labels[0] if item.entry.labels else -1]))
            progress.advance(len(batch.ok) + len(batch.failed))
    progress.stop()
    return ids, np.concatenate(labels), np.concatenate(scores), failed


@torch.no_grad()
def attrs_scores(attributes: Path, compat: str, model: AttrsClassifier, rule: ViewRule) -> tuple[list[str], np.ndarray]:
    """(video ids, S_A scores [N, K] by `rule`) of the attributes CSV, rows of a video averaged."""
    table = read_attributes_csv(attributes)
    check_same_profile(compat, read_csv_compat(attributes), attributes)
    return attribute_scores(lambda sentences: model.scores(sentences, rule), table.sentences, table.video_ids,
                            SENTENCE_BATCH)
