"""The Video branch's validation during `train-video`: this process's share of the validation set,
and the class probabilities of the whole set, measured by `bike_cli.eval.metrics` over every process.

Videos of `--val-videos` that cannot be decoded are left out of the metrics and counted: the epoch's
record holds `val_skipped`, and `ValData.skipped` lists them (every process's) for the run folder's
`val_failures.csv` and the warning (`RunFolder.record_val_skips`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data.cached_clips import CachedClips, cache_labels
from bike_cli.data.class_subsets import subset_entries, subset_rows
from bike_cli.data.clip_dataset import MultiViewClips, collate_items
from bike_cli.data.memory_cache import SlabBatches
from bike_cli.data.sampling import ViewLayout
from bike_cli.data.train_clips import val_targets
from bike_cli.data.video_lists import read_video_list
from bike_cli.engine.distributed import metrics_over_processes
from bike_cli.engine.frame_encoder import to_unit_pixels
from bike_cli.engine.run_folder import VAL_SKIPPED
from bike_cli.errors import InputError
from bike_cli.io.feature_cache import Failure, FeatureCache
from bike_cli.models.clip_spec import ClipSpec
from bike_cli.models.text import ClassTexts
from bike_cli.models.video_branch import VideoBranch


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
