"""Stage `train-video`: the paper's Video branch (VCS head, temporal transformer, Eq. 7 loss).

From a feature cache (CLIP frozen) or end to end from videos (CLIP's visual encoder fine-tuned at
`clip_lr_ratio` x the head's lr); the text encoder is always frozen. The same code runs on one CPU, one GPU
or many under `accelerate launch`. Outputs: docs/formats.md, "Video-branch run folder".
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from bike_cli.config.profile import Profile, check_same_profile, get_profile
from bike_cli.config.ranges import check_ranges
from bike_cli.config.recipe import setting_source, setting_text
from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data.cached_clips import CachedClips, MemoryBatches, MemoryClips, cache_labels, wants_memory
from bike_cli.data.class_names import class_subset, described_classes, read_class_names, subset_entries, subset_rows
from bike_cli.data.clip_dataset import ClipAugment, TrainClips, collate_train
from bike_cli.data.sampling import few_shot_indices, shot_list_indices
from bike_cli.data.video_lists import labels_array, read_video_list
from bike_cli.engine.evaluation import ValData, val_data, validate
from bike_cli.engine.frame_encoder import to_unit_pixels
from bike_cli.engine.run_folder import CheckpointHeader, RunFolder, TrainSummary, run_guard
from bike_cli.engine.training_loop import (
    PARAM_GROUPS,
    FitSettings,
    LoopSettings,
    RepeatedDataset,
    TrainBranch,
    Trainer,
    run_training,
)
from bike_cli.errors import InputError, as_user_error
from bike_cli.io.checkpoints import AUTHORS_VCS_TOKENS, VIDEO_KIND, is_authors_checkpoint
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.guard import PathGuard, file_or_none
from bike_cli.io.identity import check_same_model
from bike_cli.models.build import VideoBranchSpec, build_video_branch, resolve_video_spec
from bike_cli.models.clip import load_clip, visual_sha256
from bike_cli.models.factory import init_branch_weights
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import PromptError, check_templates, encode_class_texts
from bike_cli.progress import Progress

log = logging.getLogger(__name__)


def _check(cfg: TrainVideoConfig) -> PathGuard:
    guard = run_guard(cfg.out, {"--features": cfg.features, "--videos": cfg.videos, "--classes": cfg.classes,
                                "--base-classes": cfg.base_classes, "--shots-list": cfg.shots_list,
                                "--val-features": cfg.val_features, "--val-videos": cfg.val_videos,
                                "--init-from": cfg.init_from, "--pretrained": file_or_none(cfg.pretrained),
                                "--class-texts": cfg.class_texts})
    if (cfg.features is None) == (cfg.videos is None):
        raise InputError("give exactly one of --features (a feature cache) or --videos (a video list)")
    if cfg.val_features is not None and cfg.val_videos is not None:
        raise InputError("give at most one of --val-features and --val-videos")
    check_ranges(cfg)
    get_profile(cfg.compat)  # InputError for an unknown --compat
    if cfg.shots is not None and cfg.shots_list is not None:
        raise InputError("give at most one of --shots (a seeded sample of K videos a class) and --shots-list "
                         "(the videos of a published K-shot list)")
    if cfg.average_last is not None and not 1 <= cfg.average_last <= cfg.epochs:
        raise InputError(f"--average-last {cfg.average_last} must be between 1 and --epochs {cfg.epochs}: "
                         "the number of last epochs whose weights averaged.pt is the mean of")
    with as_user_error(PromptError):
        check_templates(cfg.templates)
    if cfg.features is not None and cfg.head == "mean" and cfg.temporal == "none":
        raise InputError("--head mean --temporal none on a feature cache has nothing to train but the logit "
                         "scale: add --temporal transformer or --head vcs, train end to end with --videos, or "
                         "evaluate the frozen CLIP as it is with `bike eval` (zero-shot)")
    return guard


def _vcs_tokens(cfg: TrainVideoConfig) -> str:
    """--vcs-tokens as given; else all under --compat authors from an authors' checkpoint, else words."""
    if cfg.vcs_tokens is not None:
        return cfg.vcs_tokens
    if (get_profile(cfg.compat).authors_init_all_tokens and cfg.init_from is not None
            and is_authors_checkpoint(cfg.init_from)):
        log.info("authors' checkpoint %s: VCS queries are all token positions (--vcs-tokens all), as the "
                 "authors' code computes them; pass --vcs-tokens words for Eq. 5's class-name words", cfg.init_from)
        return AUTHORS_VCS_TOKENS
    return "words"


def _class_names(cfg: TrainVideoConfig, cache: FeatureCache | None) -> tuple[list[str], str]:
    """The names the training labels are numbered by and what gives them (for messages): `--classes` (a
    cache's labels are mapped to it by name: `cache_labels`), else the cache's own, else the base classes'."""
    if cfg.classes:
        return read_class_names(cfg.classes), f"--classes {cfg.classes}"
    if cache is not None and cache.meta.class_names:
        return list(cache.meta.class_names), str(cache.path)
    if cfg.base_classes is not None:
        return read_class_names(cfg.base_classes), f"--base-classes {cfg.base_classes}"
    raise InputError("no class names: pass --classes FILE (the cache does not record them)")


def _resolve_model(cfg: TrainVideoConfig, cache: FeatureCache | None) -> tuple[str, str]:
    """Model and weights: a cache fixes them (it was made by one CLIP); end to end they are required."""
    if cache is None:
        if not cfg.model or not cfg.pretrained:
            raise InputError("end-to-end training needs --model and --pretrained")
        return cfg.model, cfg.pretrained
    meta = cache.meta
    if cfg.model and cfg.model != meta.model_name:
        raise InputError(f"{setting_text(cfg, 'model')} differs from {meta.model_name}, the model that made "
                         f"{cache.path}: pass --model {meta.model_name}, or a cache made by {cfg.model}")
    if cfg.pretrained and cfg.pretrained != meta.pretrained and not Path(cfg.pretrained).is_file():
        raise InputError(f"{setting_text(cfg, 'pretrained')} differs from {meta.pretrained}, which made "
                         f"{cache.path}: pass --pretrained {meta.pretrained}, or a cache made with {cfg.pretrained}")
    return meta.model_name, cfg.pretrained or meta.pretrained


def run_train_video(cfg: TrainVideoConfig, progress_factory=Progress) -> TrainSummary:
    """Train the Video branch; see the module docstring for the outputs."""
    guard = _check(cfg)
    cfg = replace(cfg, vcs_tokens=_vcs_tokens(cfg))
    profile = get_profile(cfg.compat)
    return run_training(cfg, "train-video", guard, profile, partial(_train_video, cfg, profile, progress_factory))


def _train_video(cfg: TrainVideoConfig, profile: Profile, progress_factory, settings: LoopSettings, accelerator,
                 run: RunFolder) -> TrainSummary:
    """The stage proper, while this launch holds the run folder's lock (`run_training` calls it)."""
    device = accelerator.device
    cache = FeatureCache(cfg.features, need_rows=True) if cfg.features else None
    caches = [made for made in (cache, FeatureCache(cfg.val_features, need_rows=True) if cfg.val_features else None)
              if made is not None]
    for made in caches:
        check_same_profile(cfg.compat, made.meta.compat, made.path)
    label_names, label_source = _class_names(cfg, cache)
    for made in caches:
        made.check_classes(len(label_names), f"--classes {cfg.classes}")
    subset = class_subset(cfg.base_classes, label_names, label_source)
    class_names = label_names if subset is None else [label_names[i] for i in subset]  # what it learns
    descriptions = described_classes(cfg.class_texts, class_names)
    model_name, pretrained = _resolve_model(cfg, cache)
    clip_model, spec = load_clip(model_name, pretrained, quick_gelu=cfg.quick_gelu, device=device)
    # where each identity field of the run's CLIP came from (an option, a recipe key, the cache), for a mismatch
    sources = {"model_name": setting_source(cfg, "model", "the model of --features"),
               "weights": setting_source(cfg, "pretrained", "the weights of --features"),
               "quick_gelu": setting_source(cfg, "quick_gelu", "the default of these weights")}
    for features in caches:
        check_same_model(spec, f"this run's {model_name}", features.meta, str(features.path),
                         cfg.allow_model_mismatch, sources=sources)
    with as_user_error(PromptError):  # a class name too long for the text context, --vcs-tokens
        class_texts = encode_class_texts(clip_model, get_tokenizer(model_name), class_names, cfg.templates,
                                         cfg.vcs_tokens, descriptions=descriptions)
    branch_spec = resolve_video_spec(VideoBranchSpec.of(
        spec, head=cfg.head, temporal=cfg.temporal, temporal_layers=cfg.temporal_layers, tau=cfg.tau,
        vcs_tokens=cfg.vcs_tokens, templates=cfg.templates, frames=cfg.frames,
        class_texts=descriptions and list(zip(class_names, descriptions)), **profile.branch_training(cfg.loss)),
        clip_model)
    with as_user_error(ValueError):  # --head, --temporal, --tau, --loss
        model = build_video_branch(branch_spec, clip_model, with_visual=bool(cfg.videos)).to(device)
    cache_visual = visual_sha256(clip_model.state_dict()) if cache is not None and cfg.init_from else None
    del clip_model  # the text tower's work is done (class_texts); the visual tower lives on in `model`
    if cfg.init_from:
        init_branch_weights(model, cfg.init_from, cache, cache_visual, cfg.ignore_visual_weights, spec=branch_spec,
                            model_from=setting_text(cfg, "model") if cfg.model else f"the model that made {cache.path}",
                            allow_model_mismatch=cfg.allow_model_mismatch)
    if cfg.grad_checkpointing:
        if model.visual is not None:
            model.visual.set_grad_checkpointing(True)
        if cfg.temporal == "transformer":
            model.head.temporal.grad_checkpointing = True
    train_set = train_dataset(cfg, cache, label_names, spec.image_size, subset)
    memory = _in_memory(cfg, train_set, device)
    if memory is not None:
        train_set = memory
    elif cfg.samples_per_epoch:
        train_set = RepeatedDataset(train_set, cfg.samples_per_epoch)
    val = val_data(cfg, label_names, spec, accelerator.process_index, accelerator.num_processes, subset)

    def batch_inputs(batch) -> tuple:
        inputs, targets = batch
        if inputs.dtype == torch.uint8:  # decoded pixels (end to end)
            inputs = to_unit_pixels(inputs, spec, device)
        else:
            inputs = inputs.to(device, non_blocking=True).float()
        return inputs, targets.to(device), class_texts

    groups = model.param_groups(cfg.lr, cfg.clip_lr_ratio, cfg.weight_decay, PARAM_GROUPS[profile.optimizer_groups])
    branch = TrainBranch(model, groups, batch_inputs,
                         validate=(lambda m: _validate(m, val, class_texts, spec, accelerator, run)) if val else None,
                         checkpoint=CheckpointHeader(VIDEO_KIND, asdict(spec), class_names, branch_spec.to_dict()))
    return Trainer(settings, accelerator, run, progress_factory).fit(
        branch, FitSettings(cfg.lr, cfg.weight_decay, profile), train_set,
        collate_fn=collate_train if cfg.videos else None,
        batch_loader=(lambda sampler: MemoryBatches(memory, sampler)) if memory is not None else None)


def _validate(model, val: ValData, class_texts, spec, accelerator, run: RunFolder) -> dict:
    """The epoch's validation; over --val-videos the main process records the videos it skipped."""
    metrics = validate(model, val, class_texts, spec, accelerator.device)
    if val.from_videos and accelerator.is_main_process:
        run.record_val_skips(val.skipped, val.videos)
    return metrics


def _in_memory(cfg: TrainVideoConfig, train_set, device) -> MemoryClips | None:
    """The cached training rows held in memory (RAM, or the GPU's), when `--cache-in-memory` asks for it."""
    if not isinstance(train_set, CachedClips) or not wants_memory(
            cfg.cache_in_memory, MemoryClips.nbytes(train_set), device):
        return None
    memory = MemoryClips(train_set, device, length=cfg.samples_per_epoch)
    log.info("holding %d cached training rows in %s memory", memory.n, device.type)
    return memory


def train_dataset(cfg: TrainVideoConfig, cache: FeatureCache | None, class_names: list[str],
                  size: int, subset: np.ndarray | None = None) -> CachedClips | TrainClips:
    """The training set train-video uses: cached clips of `cache`'s labelled rows, or (no cache) the
    decoded, augmented videos of `cfg.videos` at `size` pixels; `cfg.shots` per class when set.
    Labels are numbered by `class_names`; with `subset` (their positions of the classes trained on, e.g.
    the base classes: `class_subset`) only the videos of those classes are kept, relabelled by the subset.
    Public so that the benchmarks time what the stage trains on."""
    if cache is not None:
        labels, labelled = subset_rows(cache_labels(cache, class_names, cfg.classes), subset)
        rows = labelled
        if cfg.shots:
            rows = labelled[few_shot_indices(labels[labelled], cfg.shots, cfg.seed)]
        if cfg.shots_list is not None:
            rows = _labelled_shots(shot_list_indices(cache.video_ids, cfg.shots_list, f"the cache {cache.path}"),
                                   set(labelled.tolist()), cache.video_ids, cfg.shots_list)
        return CachedClips(cache, cfg.frames, train=True, seed=cfg.seed, rows=rows, labels=labels)
    video_list = read_video_list(cfg.videos, root=cfg.root, class_names=class_names)
    entries = list(enumerate(video_list.entries))
    if subset is not None:
        entries = subset_entries(entries, subset)
    entries = [(i, e) for i, e in entries if e.labels]
    num_classes = len(class_names) if subset is None else len(subset)
    if cfg.shots:
        labels = labels_array([e for _, e in entries], num_classes, video_list.multilabel)
        entries = [entries[i] for i in few_shot_indices(labels, cfg.shots, cfg.seed)]
    if cfg.shots_list is not None:
        every = [e.video_id for e in video_list.entries]
        kept = dict(entries)  # list row -> its entry, relabelled by the subset where there is one
        rows = _labelled_shots(shot_list_indices(every, cfg.shots_list, f"--videos {cfg.videos}"), set(kept), every,
                               cfg.shots_list)
        entries = [(int(i), kept[int(i)]) for i in rows]
    augment = ClipAugment(size, scale_min=cfg.crop_scale_min, flip_prob=cfg.flip_prob,
                          grayscale_prob=cfg.grayscale_prob)
    return TrainClips(entries, frames=cfg.frames, size=size, augment=augment, seed=cfg.seed,
                      num_classes=num_classes, multilabel=video_list.multilabel, profile=get_profile(cfg.compat))


def _labelled_shots(rows: np.ndarray, labelled: set[int], video_ids: list[str], shots_list: Path) -> np.ndarray:
    """`rows` (a shot list's videos), after checking each has a label to train on."""
    unlabelled = [int(r) for r in rows if int(r) not in labelled]
    if unlabelled:
        raise InputError(f"--shots-list {shots_list}: video {video_ids[unlabelled[0]]!r} has no label in the "
                         f"training set ({len(unlabelled)} listed videos have none)")
    return rows

