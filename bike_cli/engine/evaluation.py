"""The evaluation loops of `bike eval`: batches of a test set -> per-video class probabilities.

Video branch: each view is scored as the branch's view probabilities (`view_probabilities` under the
model's rule) and the views are averaged per video; the views come from a multi-view feature cache or
are decoded here (`CxS` views of a video list). Attributes branch: S_A = the softmax of each attribute
sentence's logits (a train-attrs checkpoint, or without one the frozen text encoder of the Video
branch's CLIP), rows of one video averaged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bike_cli.config.profile import check_same_profile, get_profile
from bike_cli.data.cached_clips import CachedClips
from bike_cli.data.clip_dataset import MultiViewClips, collate_items
from bike_cli.data.memory_cache import SlabBatches
from bike_cli.data.sampling import ViewLayout
from bike_cli.data.video_lists import read_video_list
from bike_cli.engine.runtime import Progress, cores_beside_workers, loader_workers
from bike_cli.io.attributes_csv import read_attributes_csv
from bike_cli.io.checkpoints import load_attrs_checkpoint
from bike_cli.io.csv_meta import read_csv_compat
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.models.authors import ATTRS_RULES, view_probabilities
from bike_cli.models.build import attrs_spec_of, build_attrs_branch
from bike_cli.models.clip import load_clip
from bike_cli.models.eval_branch import VideoModel
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.retrieval import SENTENCE_BATCH
from bike_cli.models.text import DEFAULT_TEMPLATE, encode_class_texts
from bike_cli.models.video_branch import image_features

log = logging.getLogger(__name__)

Scores = tuple[list[str], np.ndarray, np.ndarray, list[str]]  # video ids, labels, probabilities [N, K], failed ids


@torch.no_grad()
def cache_scores(vm: VideoModel, cache: FeatureCache, batch_size: int, device, progress: Progress) -> Scores:
    """The Video branch's scores of every video of a feature cache, views averaged (none fail)."""
    labels, scores = [], []
    dataset = CachedClips(cache, vm.frames, train=False)
    progress.start(len(dataset), "scoring (cache)")
    for frames, target in SlabBatches(dataset, batch_size):  # frames [b, V, T, D], no workers
        scores.append(view_probabilities(vm.branch, frames.to(device).float(), vm.texts, vm.rule).cpu().numpy())
        labels.append(target.numpy())
        progress.advance(len(target))
    progress.stop()
    return list(cache.video_ids), np.concatenate(labels), np.concatenate(scores), []


@torch.no_grad()
def decoded_scores(vm: VideoModel, videos: Path, root: Path | None, layout: ViewLayout, compat: str,
                   batch_size: int, workers: int, device, progress: Progress) -> Scores:
    """The Video branch's scores of the videos of a list, `layout` views decoded here and averaged;
    a video that cannot be decoded is logged and listed as failed."""
    ids, labels, scores, failed = [], [], [], []
    video_list = read_video_list(videos, root=root, class_names=vm.names)
    items = list(enumerate(video_list.entries))
    dataset = MultiViewClips(items, frames=vm.frames, layout=layout, size=vm.spec.image_size,
                             compat=compat, resize_mode=vm.spec.resize_mode)
    per_batch = max(1, batch_size // layout.num_views)
    workers = loader_workers(workers, -(-len(dataset) // per_batch))
    loader = DataLoader(dataset, batch_size=per_batch, num_workers=workers, collate_fn=collate_items)
    progress.start(len(dataset), "scoring (videos)")
    k = vm.texts.pooled.shape[0]
    with cores_beside_workers(device, workers):  # CPU: torch threads beside the loader workers
        for batch in loader:
            failed += [item.entry.video_id for item in batch.failed]
            for item in batch.failed:
                log.warning("not scored: %s: %s", item.entry.video_id, item.error)
            if batch.frames is not None:
                pixels = _pixels(batch.frames, vm.spec, device)  # [b, V, T, 3, S, S]
                b, v, t = pixels.shape[:3]
                emb = image_features(vm.branch.visual, pixels.flatten(0, 2)).view(b, v, t, -1)
                scores.append(view_probabilities(vm.branch, emb, vm.texts, vm.rule).cpu().numpy())
                if vm.kept is not None:
                    vm.kept.append(emb.float().cpu())
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


def _pixels(frames: torch.Tensor, spec, device) -> torch.Tensor:
    """uint8 [..., 3, S, S] -> float normalised by the model's mean and std, on `device`."""
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(3, 1, 1)
    return (frames.to(device).float() / 255.0 - mean) / std


@torch.no_grad()
def attrs_scores(attributes: Path, attrs_checkpoint: Path | None, compat: str, class_names: list[str],
                 vm: VideoModel, device) -> tuple[list[str], np.ndarray]:
    """(video ids, S_A probabilities [N, K]) from the attributes CSV, rows of a video averaged."""
    table = read_attributes_csv(attributes)
    check_same_profile(compat, read_csv_compat(attributes), attributes)
    if attrs_checkpoint is not None:
        ckpt = load_attrs_checkpoint(attrs_checkpoint)
        attrs_spec = attrs_spec_of(ckpt, attrs_checkpoint)
        clip, spec = load_clip(attrs_spec.model_name, attrs_spec.pretrained, quick_gelu=attrs_spec.quick_gelu,
                               device=device)
        tune, templates = attrs_spec.tune, attrs_spec.templates
        branch = build_attrs_branch(attrs_spec, clip).to(device)
        branch.load_state_dict(ckpt.state_dict)
    else:  # plug-and-play: the frozen text encoder of the Video branch's CLIP, no training
        clip, spec, tune, templates = vm.clip, vm.spec, "none", [DEFAULT_TEMPLATE]
        branch = None
    tokenizer = get_tokenizer(spec.model_name)
    classes = encode_class_texts(clip, tokenizer, class_names, templates, "all").pooled  # [K, D]
    probs = []
    for start in range(0, len(table.sentences), SENTENCE_BATCH):
        tokens = tokenizer(table.sentences[start : start + SENTENCE_BATCH]).to(device)
        if branch is None:
            emb = torch.nn.functional.normalize(clip.encode_text(tokens).float(), dim=-1)
            logits = emb @ torch.nn.functional.normalize(classes, dim=-1).T
            scale = clip.logit_scale.exp()
        else:
            inputs = tokens if tune == "full" else clip.encode_text(tokens).float()
            branch.eval()
            logits, scale = branch.logits(branch.encode_attributes(inputs).float(), classes), branch.logit_scale().exp()
        scores = ATTRS_RULES[get_profile(compat).attrs_scores](logits, scale)
        probs.append(scores.cpu().numpy())
    probs = np.concatenate(probs)
    order: dict[str, list[int]] = {}
    for row, vid in enumerate(table.video_ids):
        order.setdefault(vid, []).append(row)
    return list(order), np.stack([probs[rows].mean(0) for rows in order.values()])
