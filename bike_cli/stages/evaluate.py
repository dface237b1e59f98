"""Stage `eval`: score a test set with the Video branch (and the Attributes branch), fuse, measure.

Video branch: from a multi-view feature cache or from videos (`CxS` views decoded here). Each view
is scored as softmax(logit_scale * cosine logits) over the K classes and the views are averaged per
video (the authors' multi-view protocol). Without `--checkpoint` the branch is zero-shot CLIP (the
chosen head on the pretrained model, no temporal transformer) scored with the model's own logit scale,
uncapped. A SigLIP model's `logit_bias` is one number added to every class's logit: it cancels in the
softmax over classes, so bike's softmax-based scores, views average and fusion need no change.

Attributes branch (optional, from an attributes CSV): S_A = the same softmax of the attribute
sentence's logits, from a train-attrs checkpoint or, without one, the plug-and-play zero-training
branch (frozen text encoder, CLIP's logit scale). Per-view attribute rows are averaged per video.
Fusion: S = lambda * S_V + (1 - lambda) * S_A (Eq. 4).

Outputs in `out/`: `video_scores.csv`, `attrs_scores.csv`, `fused_scores.csv` (score CSVs,
docs/formats.md) and `metrics.json` (the protocol's results per branch).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from bike_cli.config.profile import (
    BIKE,
    BIKE_SOFTMAX,
    FRAME_SOFTMAX,
    FUSED,
    check_profile,
    check_same_profile,
    get_profile,
    recorded_profile,
    video_score_rule,
)
from bike_cli.data.cached_clips import CachedClips
from bike_cli.data.clip_dataset import MultiViewClips, collate_items
from bike_cli.data.lists.classes import read_class_names
from bike_cli.data.lists.read import read_video_list
from bike_cli.data.memory_cache import SlabBatches
from bike_cli.data.sampling import check_frames, parse_views
from bike_cli.engine.distributed import writer_lock
from bike_cli.engine.runtime import Progress, cores_beside_workers, resolve_device
from bike_cli.errors import InputError
from bike_cli.eval.authors_zero_shot import authors_zero_shot_half
from bike_cli.eval.protocols import PROTOCOLS, run_protocol
from bike_cli.io.atomic import write_text
from bike_cli.io.attributes_csv import read_attributes_csv
from bike_cli.io.authors_checkpoint import is_authors_checkpoint
from bike_cli.io.checkpoints import load_attrs_checkpoint, load_video_checkpoint
from bike_cli.io.csv_meta import meta_path, read_csv_compat, write_csv_meta
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.guard import PathGuard, file_or_none
from bike_cli.io.identity import check_same_model
from bike_cli.io.outputs import check_folder_output
from bike_cli.io.score_csv import ScoreTable, write_score_csv
from bike_cli.models.authors import ATTRS_RULES, view_probabilities
from bike_cli.models.authors_branch import check_cache_visual_weights, load_authors_branch
from bike_cli.models.build import VideoBranchSpec, attrs_spec_of, build_attrs_branch, build_video_branch, video_spec_of
from bike_cli.models.clip import load_clip
from bike_cli.models.heads import DEFAULT_TAU
from bike_cli.models.loss import MAX_LOG_SCALE
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.retrieval import SENTENCE_BATCH
from bike_cli.models.text import DEFAULT_TEMPLATE, ClassTexts, encode_class_texts
from bike_cli.models.video_branch import VideoBranch, image_features

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    out: Path
    checkpoint: Path | None = None  # Video-branch run folder or checkpoint; None = zero-shot CLIP
    features: Path | None = None
    videos: Path | None = None
    root: Path | None = None
    classes: Path | None = None
    views: str | None = None  # CxS for --videos; with --features the cache's views (must match if given)
    attributes: Path | None = None
    attrs_checkpoint: Path | None = None
    fuse: float | None = None  # lambda of Eq. 4
    protocol: str = "full"
    repeats: int = 10
    seed: int = 0
    splits: list[str] = field(default_factory=list)
    # zero-shot model (without --checkpoint)
    model: str | None = None
    pretrained: str | None = None
    quick_gelu: bool | None = None
    head: str = "vcs"
    vcs_tokens: str | None = None  # zero-shot: words [default]; an authors' checkpoint: all [default]
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])
    frames: int | None = None  # default: the checkpoint's, else the cache's, else 8
    batch_size: int = 64
    workers: int = 2
    device: str | None = None
    plots: Path | None = None  # folder for per-class accuracy and fusion-curve PNGs
    compat: str = BIKE  # bike | authors (bike_cli.config.profile): the authors' view rule, fusion, sampling
    ignore_visual_weights: bool = False  # use a cache made by another visual encoder than the checkpoint's
    allow_model_mismatch: bool = False  # a checkpoint or model other than the cache's: warn instead of refusing


@dataclass
class EvalSummary:
    out: Path
    videos: int
    metrics: dict  # branch -> protocol result
    files: dict  # branch -> score CSV
    failed: list[str] = field(default_factory=list)


@dataclass
class _VideoModel:
    branch: VideoBranch
    texts: ClassTexts
    spec: object
    frames: int
    clip: torch.nn.Module
    names: list[str]
    compat: str = BIKE
    rule: str = BIKE_SOFTMAX  # how view logits become scores (bike_cli.config.profile.video_score_rule)
    kept: list | None = None  # raw frame embeddings [b, V, T, D] of decoded videos, when a protocol needs them


def _video_model(cfg: EvalConfig, class_names: list[str] | None, cache: FeatureCache | None, device) -> tuple[_VideoModel, list[str]]:
    """The Video branch: a trained checkpoint, or zero-shot CLIP with the chosen head."""
    if cfg.checkpoint is not None and is_authors_checkpoint(cfg.checkpoint):
        return _authors_model(cfg, class_names, cache, device)
    if cfg.checkpoint is not None:
        ckpt = load_video_checkpoint(cfg.checkpoint)
        settings, names = ckpt.config, ckpt.class_names
        branch_spec = video_spec_of(ckpt, cfg.checkpoint)
        if recorded_profile(settings.get("compat")) != cfg.compat:  # training and scoring rules are separate choices
            log.warning("%s was trained with --compat %s; scoring with --compat %s", cfg.checkpoint,
                        recorded_profile(settings.get("compat")), cfg.compat)
        if class_names is not None and class_names != names:
            log.warning("evaluating on %d classes of --classes (the checkpoint was trained on %d)",
                        len(class_names), len(names))
            names = class_names
        model_name, pretrained, quick = branch_spec.model_name, branch_spec.pretrained, branch_spec.quick_gelu
        if pretrained not in ("none",) and os.sep in pretrained and not Path(pretrained).exists():
            raise InputError(f"the checkpoint's CLIP weights {pretrained} are missing (moved?); "
                             f"{cfg.checkpoint} needs them for the text encoder")
    else:
        if class_names is None:
            raise InputError("zero-shot evaluation needs --classes (or class names recorded in the cache)")
        names = class_names
        model_name = cfg.model or (cache.meta.model_name if cache else None)
        pretrained = cfg.pretrained or (cache.meta.pretrained if cache else None)
        same_model = cache is not None and model_name == cache.meta.model_name  # else open_clip's own choice
        quick = cfg.quick_gelu if cfg.quick_gelu is not None else (cache.meta.quick_gelu if same_model else None)
        if not model_name or not pretrained:
            raise InputError("without --checkpoint, give --model and --pretrained (zero-shot CLIP)")
        branch_spec = None  # zero-shot: made once the model is loaded (its embedding size)
    if cache is not None:  # the cache's features must come from the CLIP this branch was trained on
        what = f"--checkpoint {cfg.checkpoint}" if cfg.checkpoint is not None else "the zero-shot model"
        check_same_model(ckpt.clip if cfg.checkpoint is not None else _zero_shot_identity(model_name),
                         what, cache.meta, str(cache.path), cfg.allow_model_mismatch)
    clip, spec = load_clip(model_name, pretrained, quick_gelu=quick, device=device)
    if cache is not None and cfg.checkpoint is None:
        check_same_model(spec, what, cache.meta, str(cache.path), cfg.allow_model_mismatch)
    if branch_spec is None:
        branch_spec = VideoBranchSpec.of(spec, head=cfg.head, temporal="none", tau=DEFAULT_TAU, temporal_layers=1,
                                         vcs_tokens=cfg.vcs_tokens or "words", templates=cfg.templates,
                                         frames=cfg.frames or (cache.meta.frames if cache else 8))  # the cache's T
    texts = encode_class_texts(clip, get_tokenizer(model_name), names, branch_spec.templates, branch_spec.vcs_tokens)
    # Zero-shot: the model's own scale, uncapped (SigLIP's exceeds 100); a checkpoint's is loaded below.
    branch = build_video_branch(branch_spec, clip, with_visual=bool(cfg.videos),
                                cap=None if cfg.checkpoint is None else MAX_LOG_SCALE).to(device)
    visual = branch.visual
    if cfg.checkpoint is not None:
        if visual is None and any(k.startswith("visual.") for k in ckpt.state_dict):
            raise InputError(f"{cfg.checkpoint} fine-tuned CLIP's visual encoder (trained end to end); a feature "
                             "cache holds the original CLIP's features: evaluate it with --videos and --views")
        state = {k: v for k, v in ckpt.state_dict.items() if visual is not None or not k.startswith("visual.")}
        missing, unexpected = branch.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("visual.")]
        if missing or unexpected:
            raise InputError(f"{cfg.checkpoint} does not fit its own settings: missing {missing[:4]}, "
                             f"unexpected {unexpected[:4]}")
    frames = cfg.frames or branch_spec.frames or (cache.meta.frames if cache else 8)
    return _VideoModel(branch.eval(), texts, spec, int(frames), clip, names, cfg.compat), names


def _authors_model(cfg: EvalConfig, class_names: list[str] | None, cache: FeatureCache | None, device):
    """The Video branch of an authors' checkpoint; architecture and frames from options (or the cache)."""
    if class_names is None:
        raise InputError(f"{cfg.checkpoint} is an authors' checkpoint, which records no class names: pass --classes")
    ab = load_authors_branch(cfg.checkpoint, cfg.model or (cache.meta.model_name if cache else None),
                             cfg.frames or (cache.meta.frames if cache else None), head=cfg.head,
                             vcs_tokens=cfg.vcs_tokens, with_visual=cfg.videos is not None, device=device)
    if cache is not None:
        check_cache_visual_weights(ab, cache.meta, cache.path, cfg.checkpoint, cfg.ignore_visual_weights)
    texts = encode_class_texts(ab.clip, get_tokenizer(ab.spec.model_name), class_names, ab.branch_spec.templates,
                               ab.branch_spec.vcs_tokens)
    return _VideoModel(ab.branch, texts, ab.spec, ab.branch_spec.frames, ab.clip, class_names, cfg.compat), class_names


def _zero_shot_identity(model_name: str) -> dict:
    """What is known of the zero-shot model before loading it (the rest is checked once it is loaded)."""
    return {"model_name": model_name}


def _pixels(frames: torch.Tensor, spec, device) -> torch.Tensor:
    mean = torch.tensor(spec.mean, device=device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(3, 1, 1)
    return (frames.to(device).float() / 255.0 - mean) / std


@torch.no_grad()
def _video_scores(cfg: EvalConfig, vm: _VideoModel, cache: FeatureCache | None, device, progress: Progress):
    """(video ids, labels, probabilities [N, K], failed ids) of the Video branch, views averaged."""
    ids, labels, scores, failed = [], [], [], []
    if cache is not None:
        dataset = CachedClips(cache, vm.frames, train=False)
        progress.start(len(dataset), "scoring (cache)")
        for frames, target in SlabBatches(dataset, cfg.batch_size):  # frames [b, V, T, D], no workers
            scores.append(view_probabilities(vm.branch, frames.to(device).float(), vm.texts, vm.rule).cpu().numpy())
            labels.append(target.numpy())
            progress.advance(len(target))
        ids = list(cache.video_ids)
    else:
        layout = parse_views(cfg.views or "1x1", cfg.compat)
        video_list = read_video_list(cfg.videos, root=cfg.root, class_names=vm.names)
        items = list(enumerate(video_list.entries))
        dataset = MultiViewClips(items, frames=vm.frames, layout=layout, size=vm.spec.image_size,
                                 compat=cfg.compat, resize_mode=vm.spec.resize_mode)
        loader = DataLoader(dataset, batch_size=max(1, cfg.batch_size // layout.num_views), num_workers=cfg.workers,
                            collate_fn=collate_items)
        progress.start(len(dataset), "scoring (videos)")
        k = vm.texts.pooled.shape[0]
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


@torch.no_grad()
def _attrs_scores(cfg: EvalConfig, class_names: list[str], vm: _VideoModel, device) -> tuple[list[str], np.ndarray]:
    """(video ids, S_A probabilities [N, K]) from the attributes CSV, rows of a video averaged."""
    table = read_attributes_csv(cfg.attributes)
    check_same_profile(cfg.compat, read_csv_compat(cfg.attributes), cfg.attributes)
    if cfg.attrs_checkpoint is not None:
        ckpt = load_attrs_checkpoint(cfg.attrs_checkpoint)
        attrs_spec = attrs_spec_of(ckpt, cfg.attrs_checkpoint)
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
        scores = ATTRS_RULES[get_profile(cfg.compat).attrs_scores](logits, scale)
        probs.append(scores.cpu().numpy())
    probs = np.concatenate(probs)
    order: dict[str, list[int]] = {}
    for row, vid in enumerate(table.video_ids):
        order.setdefault(vid, []).append(row)
    return list(order), np.stack([probs[rows].mean(0) for rows in order.values()])


def _check(cfg: EvalConfig) -> PathGuard:
    if (cfg.features is None) == (cfg.videos is None):
        raise InputError("give exactly one of --features (a feature cache) or --videos (a video list)")
    if cfg.fuse is not None and not 0.0 <= cfg.fuse <= 1.0:
        raise InputError(f"--fuse is the weight lambda of the Video branch, in [0, 1]; not {cfg.fuse}")
    if cfg.fuse is not None and cfg.attributes is None:
        raise InputError("--fuse needs the Attributes branch: pass --attributes ATTRS.csv")
    if cfg.attrs_checkpoint is not None and cfg.attributes is None:
        raise InputError("--attrs-checkpoint needs --attributes ATTRS.csv (the sentences to score)")
    if cfg.protocol not in PROTOCOLS:
        raise InputError(f"--protocol {cfg.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    check_profile(cfg.compat)
    if cfg.frames is not None:
        check_frames(cfg.frames)
    if cfg.views:
        parse_views(cfg.views, cfg.compat)
    check_folder_output("--out", cfg.out)
    outputs = {f"--out's {name}": cfg.out / name for name in OUTPUT_FILES}
    outputs.update({f"--out's {meta_path(name)}": meta_path(cfg.out / name) for name in OUTPUT_FILES})
    return PathGuard({"--checkpoint": cfg.checkpoint, "--features": cfg.features, "--videos": cfg.videos,
                      "--classes": cfg.classes, "--attributes": cfg.attributes,
                      "--attrs-checkpoint": cfg.attrs_checkpoint, "--pretrained": file_or_none(cfg.pretrained)},
                     outputs)


OUTPUT_FILES = ("video_scores.csv", "attrs_scores.csv", "fused_scores.csv", "metrics.json")


def clear_outputs(out: Path, guard: PathGuard) -> None:
    """Remove the outputs of an earlier eval in `out`, metrics.json first: a run never mixes with another."""
    for name in reversed(OUTPUT_FILES):
        guard.discard(out / name, meta_path(out / name))


def run_eval(cfg: EvalConfig, progress: Progress | None = None) -> EvalSummary:
    """Score, fuse and measure; see the module docstring for the outputs."""
    guard = _check(cfg)
    with writer_lock(cfg.out, folder=True, is_main=True, world_size=1):
        return _run_eval(cfg, progress, guard)


def _run_eval(cfg: EvalConfig, progress: Progress | None, guard: PathGuard) -> EvalSummary:
    """The evaluation proper, while this process holds the output folder's lock."""
    progress = progress or Progress()
    device = resolve_device(cfg.device)
    cache = FeatureCache(cfg.features) if cfg.features else None
    if cache is not None:
        check_same_profile(cfg.compat, cache.meta.compat, cache.path)
    if cache is not None and cfg.views and str(parse_views(cfg.views, cfg.compat)) != f"{cache.meta.clips}x{cache.meta.crops}":
        raise InputError(f"--views {cfg.views} differs from the {cache.meta.clips}x{cache.meta.crops} views "
                         f"{cache.path} holds (extract the cache with --views {cfg.views})")
    class_names = read_class_names(cfg.classes) if cfg.classes else (list(cache.meta.class_names) if cache and cache.meta.class_names else None)
    if cache is not None and class_names is not None and cache.meta.num_classes > len(class_names):
        raise InputError(f"--classes {cfg.classes} has {len(class_names)} names but {cache.path} holds labels of "
                         f"{cache.meta.num_classes} classes: give the class file the cache was extracted with")
    vm, class_names = _video_model(cfg, class_names, cache, device)
    vm.rule = video_score_rule(cfg.compat, fusing=cfg.attributes is not None)
    authors_zero_shot = get_profile(cfg.compat).zero_shot == FRAME_SOFTMAX and cfg.protocol == "zero-shot-half"
    vm.kept = [] if authors_zero_shot and cache is None else None
    started = time.perf_counter()
    with cores_beside_workers(device, 0 if cache is not None else cfg.workers):  # a cache: read here
        ids, labels, video_probs, failed = _video_scores(cfg, vm, cache, device, progress)
    branches = {"video": video_probs}
    authors_default = cfg.fuse is None and get_profile(cfg.compat).fuse_weight is not None and cfg.attributes is not None
    fuse = get_profile(cfg.compat).fuse_weight if authors_default else cfg.fuse  # lambda of Eq. 4 (the authors fuse 0.7 / 0.3)
    if cfg.attributes is not None:
        attr_ids, attr_probs = _attrs_scores(cfg, class_names, vm, device)
        position = {vid: i for i, vid in enumerate(attr_ids)}
        missing = [vid for vid in ids if vid not in position]
        if missing:
            raise InputError(f"{cfg.attributes} has no attributes for {len(missing)} scored videos, e.g. {missing[:3]}")
        branches["attrs"] = attr_probs[[position[vid] for vid in ids]]
        if fuse is not None:
            branches["fused"] = fuse * branches["video"] + (1.0 - fuse) * branches["attrs"]
    cfg.out.mkdir(parents=True, exist_ok=True)
    clear_outputs(cfg.out, guard)
    metrics, files = {}, {}
    rules = {"video": vm.rule, "attrs": get_profile(cfg.compat).attrs_scores, "fused": FUSED}
    options = {"full": {}, "zero-shot-half": {"repeats": cfg.repeats, "seed": cfg.seed},
               "k600-splits": {"splits": cfg.splits} if cfg.splits else {}}[cfg.protocol]
    for name, probs in branches.items():
        files[name] = write_score_csv(cfg.out / f"{name}_scores.csv", ids, labels, probs, class_names)
        write_csv_meta(files[name], cfg.compat, rules[name])
        table = ScoreTable(ids, labels, probs.astype(np.float32), class_names, files[name])
        metrics[name] = run_protocol(cfg.protocol, table, **options)
    if authors_zero_shot:  # their test_zeroshot.py scores frame embeddings, not the branch's scores
        frames = torch.cat(vm.kept) if cache is None else torch.from_numpy(
            np.stack([cache.embeddings(i) for i in range(len(cache))]).astype(np.float32))  # [N, V, T, D]
        metrics["video"] = authors_zero_shot_half(frames.flatten(1, 2), vm.texts.pooled.cpu(), labels,
                                                  cfg.repeats, cfg.seed)
    if cfg.plots is not None:
        files.update(_plots(cfg, branches, labels, class_names))
    document = {"protocol": cfg.protocol, "fuse": fuse, "compat": cfg.compat, "videos": len(ids), "failed": failed,
                "seconds": time.perf_counter() - started, "config": _plain(asdict(cfg)), "metrics": metrics}
    write_text(cfg.out / "metrics.json", json.dumps(document, indent=2, default=_json_default))
    return EvalSummary(cfg.out, len(ids), metrics, files, failed)


def _plots(cfg: EvalConfig, branches: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str]) -> dict:
    """Per-class accuracy (single-label sets) and, with both branches, the fusion-weight curve."""
    from bike_cli.report import plots

    written = {}
    if labels.ndim == 1:
        accuracy = plots.per_class_accuracy(branches, labels, class_names)
        written["per_class_plot"] = plots.plot_per_class_accuracy(accuracy, class_names,
                                                                  cfg.plots / "per_class_accuracy.png")
        if "attrs" in branches:
            lambdas, top1 = plots.fusion_curve(branches["video"], branches["attrs"], labels)
            written["fusion_plot"] = plots.plot_fusion_curve(lambdas, top1, cfg.fuse, cfg.plots / "fusion_curve.png")
    else:
        log.warning("--plots: per-class accuracy and the fusion curve are drawn for single-label sets only")
    return written


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
