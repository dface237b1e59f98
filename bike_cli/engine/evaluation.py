"""Batches -> class probabilities: the loops of `bike eval` (a feature cache, decoded videos, an attributes
CSV; scored by the rule the stage chose) and train-video's validation over every process's share."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bike_cli.config.profile import AUTHORS_TEST, AUTHORS_VALIDATE, BIKE_SOFTMAX, Profile, check_same_profile
from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data.cached_clips import CachedClips, cache_labels
from bike_cli.data.class_subsets import subset_entries, subset_rows
from bike_cli.data.clip_dataset import MultiViewClips, collate_items
from bike_cli.data.memory_cache import SlabBatches
from bike_cli.data.sampling import ViewLayout
from bike_cli.data.train_clips import val_targets
from bike_cli.data.video_lists import read_video_list
from bike_cli.engine.frame_encoder import FrameEncoder, to_unit_pixels
from bike_cli.engine.run_folder import VAL_SKIPPED
from bike_cli.engine.runtime import cores_beside_workers, loader_workers, metrics_over_processes
from bike_cli.errors import InputError
from bike_cli.io.attributes_csv import read_attributes_csv
from bike_cli.io.csv_meta import read_csv_compat
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.feature_cache_parts import Failure
from bike_cli.models.attributes import attribute_scores
from bike_cli.models.authors import (
    authors_attrs_scores,
    authors_validate_scores,
    authors_view_scores,
    scaled_row_scores,
    scaled_view_scores,
)
from bike_cli.models.clip_spec import ClipSpec
from bike_cli.models.factory import AttrsClassifier, VideoClassifier
from bike_cli.models.retrieval import SENTENCE_BATCH
from bike_cli.models.text import ClassTexts
from bike_cli.models.video_branch import VideoBranch, ViewRule
from bike_cli.progress import Progress

log = logging.getLogger(__name__)

# The score rules by their profile name (`VIDEO_SCORES[profile.video_score_rule(fusing)]`): cosine logits
# [b, V, K] and exp(logit scale) -> [b, K]; `ATTRS_SCORES[profile.attrs_scores]`: [R, K] -> [R, K].
VIDEO_SCORES: dict[str, ViewRule] = {
    BIKE_SOFTMAX: scaled_view_scores,
    AUTHORS_TEST: lambda logits, scale: authors_view_scores(logits),  # unscaled: their test.py
    AUTHORS_VALIDATE: lambda logits, scale: authors_validate_scores(logits),  # unscaled: their validate()
}
ATTRS_SCORES: dict[str, ViewRule] = {
    BIKE_SOFTMAX: scaled_row_scores,
    AUTHORS_VALIDATE: lambda logits, scale: authors_attrs_scores(logits),
}

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


@dataclass
class ValData:
    """The batches of this process's validation share, and what they hold."""

    loader: Iterable  # of batches: SlabBatches (a cache) or a DataLoader (videos)
    from_videos: bool
    multilabel: bool = False
    videos: int = 0  # in the whole validation list (every process's share)
    skipped: list[Failure] = field(default_factory=list)  # of the last validation, every process's, in list order


def val_data(cfg: TrainVideoConfig, class_names: list[str], spec: ClipSpec, rank: int, world: int,
             subset: np.ndarray | None = None) -> ValData | None:
    """This process's share of the validation set (every world-th video), all views, test sampling.

    Labels are numbered by `class_names`, as the training labels are; with `subset` (the positions among
    them of the classes trained on, `--base-classes`) only the videos of those classes are validated,
    relabelled by the subset, as training reads its own (`bike_cli.data.class_subsets`)."""
    if cfg.val_features:
        cache = FeatureCache(cfg.val_features, need_rows=True)
        labels = cache_labels(cache, class_names, cfg.classes or cfg.features)
        rows = np.arange(len(cache))
        if subset is not None:
            labels, rows = subset_rows(labels, subset)
        dataset = CachedClips(cache, cfg.frames, train=False, rows=rows[rank::world], labels=labels)
        return ValData(SlabBatches(dataset, batch_size=64), False)
    if cfg.val_videos:
        video_list = read_video_list(cfg.val_videos, root=cfg.val_root, class_names=class_names)
        items = list(enumerate(video_list.entries))
        if subset is not None:
            items = [(i, e) for i, e in subset_entries(items, subset) if e.labels]
        items = items[rank::world]
        dataset = MultiViewClips(items, frames=cfg.frames, layout=ViewLayout(1, 1), size=spec.image_size,
                                 resize_mode=spec.resize_mode)
        loader = DataLoader(dataset, batch_size=16, num_workers=cfg.workers, collate_fn=collate_items)
        return ValData(loader, True, video_list.multilabel, videos=len(video_list.entries))
    return None


@torch.no_grad()
def validate(model: VideoBranch, val: ValData, class_texts: ClassTexts, spec: ClipSpec,
             device: torch.device) -> dict:
    """Top-1/top-5 (or mAP) over the whole validation set, gathered from every process; with videos,
    `val_skipped`: how many could not be decoded (listed in `val.skipped`)."""
    model.eval()
    scores, labels, failed = [], [], []
    for batch in val.loader:
        if val.from_videos:
            failed += [Failure(i.list_index, i.entry.video_id, str(i.entry.path), i.error or "") for i in batch.failed]
            if batch.frames is None:
                continue
            pixels = to_unit_pixels(batch.frames, spec, device)  # [b, V, T, 3, S, S]
            b, v, t = pixels.shape[:3]
            frames = model.frame_embeddings(pixels.flatten(0, 1)).view(b, v, t, -1)
            target = val_targets(batch.ok, class_texts.pooled.shape[0], val.multilabel)
        else:
            frames, target = batch
        probs = model.class_probabilities(frames.to(device).float(), class_texts)  # [b, K]
        scores.append(probs.cpu().numpy())
        labels.append(target.numpy())
    if not val.from_videos:
        return metrics_over_processes(scores, labels)
    val.skipped = skipped_over_processes(failed)
    if len(val.skipped) >= val.videos:
        first = val.skipped[0]
        raise InputError(f"none of the {val.videos} videos of --val-videos could be read (e.g. {first.video_id}: "
                         f"{first.reason}); check the list and --val-root")
    return {**metrics_over_processes(scores, labels), VAL_SKIPPED: len(val.skipped)}


def skipped_over_processes(failed: list[Failure]) -> list[Failure]:
    """Every process's undecodable validation videos, in list order (the same list on every process)."""
    from accelerate.utils import gather_object

    return sorted((f for part in gather_object([failed]) for f in part), key=lambda f: f.list_index)
