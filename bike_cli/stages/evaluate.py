"""Stage `eval`: score a test set with the Video branch (and the Attributes branch), fuse, measure.

Video branch from a multi-view cache or from videos: each view softmax(logit_scale * cosine logits), the
views averaged per video; without `--checkpoint`, zero-shot CLIP at its own logit scale (a SigLIP
`logit_bias` cancels in that softmax). Attributes branch: the same softmax of the attribute sentence's
logits. Fusion: S = lambda * S_V + (1 - lambda) * S_A (Eq. 4). Outputs: docs/formats.md, "Evaluation folder".
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from bike_cli.config.profile import (
    BRANCH_SCORES,
    FRAME_SOFTMAX,
    FUSED,
    check_same_profile,
    get_profile,
    recorded_profile,
)
from bike_cli.config.ranges import check_choice, check_ranges
from bike_cli.config.stages import EvalConfig
from bike_cli.data.class_names import check_disjoint, labels_by_names, read_class_names, read_class_texts
from bike_cli.data.sampling import parse_views
from bike_cli.data.video_lists import SplitList, match_videos, read_split_lists, read_video_list
from bike_cli.engine.evaluation import ATTRS_SCORES, VIDEO_SCORES, Scores, attrs_scores, cache_scores, decoded_scores
from bike_cli.engine.runtime import resolve_device, writer_lock
from bike_cli.errors import InputError
from bike_cli.eval.authors_zero_shot import authors_zero_shot_half
from bike_cli.eval.fusion import default_weights, fuse_scores, fusion_curve
from bike_cli.eval.metrics import per_class_accuracy, worst_and_best
from bike_cli.eval.protocols import PROTOCOLS, run_protocol
from bike_cli.io.atomic import make_folder
from bike_cli.io.checkpoints import is_authors_checkpoint
from bike_cli.io.csv_meta import meta_path, write_csv_meta
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.guard import PathGuard, check_folder_output, file_or_none
from bike_cli.io.identity import check_same_model
from bike_cli.io.metrics_json import EVAL_METRICS_KIND, write_metrics_json
from bike_cli.io.score_csv import ScoreTable, write_score_csv
from bike_cli.models.factory import VideoClassifier, load_attrs_branch, load_video_branch
from bike_cli.progress import Progress

log = logging.getLogger(__name__)

# The scorer of --protocol zero-shot-half by Profile.zero_shot: None scores the Video branch's scores
# (eval.protocols); a function scores the frame embeddings [N, V*T, D] itself (the authors' per-frame softmax)
ZERO_SHOT_FRAME_SCORERS = {BRANCH_SCORES: None, FRAME_SOFTMAX: authors_zero_shot_half}


@dataclass
class EvalSummary:
    """What `run_eval` did, for the CLI's report (all of it is also in metrics.json)."""

    out: Path
    videos: int
    metrics: dict  # branch -> protocol result
    files: dict  # branch -> score CSV
    failed: list[str] = field(default_factory=list)


def _check(cfg: EvalConfig) -> PathGuard:
    if (cfg.features is None) == (cfg.videos is None):
        raise InputError("give exactly one of --features (a feature cache) or --videos (a video list)")
    check_ranges(cfg)
    if cfg.fuse is not None and cfg.attributes is None:
        raise InputError("--fuse needs the Attributes branch: pass --attributes ATTRS.csv")
    if cfg.attrs_checkpoint is not None and cfg.attributes is None:
        raise InputError("--attrs-checkpoint needs --attributes ATTRS.csv (the sentences to score)")
    check_choice("--protocol", cfg.protocol, PROTOCOLS)
    _check_base_novel(cfg)
    if (cfg.protocol == "splits") != bool(cfg.split_lists):
        raise InputError("--split-lists is for --protocol splits" if cfg.split_lists
                         else "--protocol splits needs --split-lists (the test-split lists)")
    get_profile(cfg.compat)  # InputError for an unknown --compat
    if cfg.views:
        parse_views(cfg.views, get_profile(cfg.compat))
    check_folder_output("--out", cfg.out)
    if cfg.plots is not None:
        check_folder_output("--plots", cfg.plots)
    outputs = {f"--out's {name}": cfg.out / name for name in OUTPUT_FILES}
    outputs.update({f"--out's {meta_path(name)}": meta_path(cfg.out / name) for name in OUTPUT_FILES})
    outputs.update({f"{option} {name}": path for option, name, path in plot_files(cfg.out, cfg.plots)})
    return PathGuard({"--checkpoint": cfg.checkpoint, "--features": cfg.features, "--videos": cfg.videos,
                      "--classes": cfg.classes, "--class-texts": cfg.class_texts, "--attributes": cfg.attributes,
                      "--attrs-checkpoint": cfg.attrs_checkpoint, "--pretrained": file_or_none(cfg.pretrained),
                      "--base-classes": cfg.base_classes, "--novel-classes": cfg.novel_classes,
                      "--novel-features": cfg.novel_features, "--novel-videos": cfg.novel_videos},
                     outputs)


def _check_base_novel(cfg: EvalConfig) -> None:
    """The options of --protocol base-novel: both class files, disjoint; a second input at most."""
    given = [flag for flag, value in (("--base-classes", cfg.base_classes), ("--novel-classes", cfg.novel_classes),
                                      ("--novel-features", cfg.novel_features),
                                      ("--novel-videos", cfg.novel_videos)) if value is not None]
    if cfg.protocol != "base-novel":
        if given:
            raise InputError(f"{given[0]} belongs to --protocol base-novel (not {cfg.protocol})")
        return
    if cfg.base_classes is None or cfg.novel_classes is None:
        raise InputError("--protocol base-novel needs --base-classes B and --novel-classes N (class files)")
    if cfg.novel_features is not None and cfg.novel_videos is not None:
        raise InputError("give at most one of --novel-features and --novel-videos")
    if (cfg.novel_features or cfg.novel_videos) is not None and cfg.attributes is not None:
        raise InputError("--attributes scores one test set: with --novel-features / --novel-videos, evaluate "
                         "the Attributes branch on one cache of all test videos instead")
    check_disjoint(read_class_names(cfg.base_classes), read_class_names(cfg.novel_classes), cfg.base_classes,
                   cfg.novel_classes)


OUTPUT_FILES = ("video_scores.csv", "novel_video_scores.csv", "attrs_scores.csv", "fused_scores.csv", "metrics.json")
PLOT_FILES = ("per_class_accuracy.png", "fusion_curve.png")  # what --plots DIR writes into DIR


def plot_files(out: Path, plots: Path | None) -> list[tuple[str, str, Path]]:
    """(option, name, path) of every plot an earlier eval may have left with this one's results: in --out
    itself, in --out's plots/ folder and in --plots (each folder once)."""
    folders = {"--out's": out, "--out's plots/": out / "plots", "--plots'": plots}
    found, seen = [], set()
    for option, folder in folders.items():
        if folder is None or folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        found += [(option, name, folder / name) for name in PLOT_FILES]
    return found


def clear_outputs(out: Path, guard: PathGuard, plots: Path | None = None) -> None:
    """Remove the outputs of an earlier eval in `out`, metrics.json first, then bike's plots (only its own
    files, by name) in `out`, `out/plots` and `plots`: a run never mixes with another."""
    for name in reversed(OUTPUT_FILES):
        guard.discard(out / name, meta_path(out / name))
    guard.discard(*(path for _, _, path in plot_files(out, plots)))


def run_eval(cfg: EvalConfig, progress: Progress | None = None) -> EvalSummary:
    """Score, fuse and measure; see the module docstring for the outputs."""
    guard = _check(cfg)
    with writer_lock(cfg.out, folder=True, is_main=True, world_size=1):
        return _run_eval(cfg, progress, guard)


def _run_eval(cfg: EvalConfig, progress: Progress | None, guard: PathGuard) -> EvalSummary:
    """The evaluation proper, while this process holds the output folder's lock."""
    progress = progress or Progress()
    device = resolve_device(cfg.device)
    cache = _test_cache(cfg, cfg.features)
    class_names = read_class_names(cfg.classes) if cfg.classes else (
        list(cache.meta.class_names) if cache and cache.meta.class_names else None)
    split_inputs = cfg.protocol == "base-novel" and (cfg.novel_features or cfg.novel_videos) is not None
    if split_inputs:  # ViFi-CLIP's layout (novel_val): the main input's labels index B, the novel input's N
        class_names = read_class_names(cfg.base_classes) + read_class_names(cfg.novel_classes)
    if cache is not None and class_names is not None:
        cache.check_classes(len(class_names), f"--classes {cfg.classes}")
    class_texts = read_class_texts(cfg.class_texts) if cfg.class_texts else None
    vm = _video_model(cfg, class_names, cache, device, class_texts)
    novel_vm = None
    if split_inputs:  # one model, its class texts split: the main input ranked among B, the novel among N
        vm, novel_vm = _split_classes(vm, len(read_class_names(cfg.base_classes)))
    class_names = vm.names
    split_lists = _split_lists(cfg, cache, class_names)
    profile = get_profile(cfg.compat)
    video_rule = profile.video_score_rule(fusing=cfg.attributes is not None)
    frame_scorer = ZERO_SHOT_FRAME_SCORERS[profile.zero_shot] if cfg.protocol == "zero-shot-half" else None
    kept = [] if frame_scorer is not None and cache is None else None  # frame embeddings [b, V, T, D] per batch
    started = time.perf_counter()
    named_by = (f"--base-classes {cfg.base_classes}" if split_inputs else
                f"--classes {cfg.classes}" if cfg.classes else cfg.checkpoint)  # what names the columns
    ids, labels, video_probs, failed = _video_scores(cfg, vm, VIDEO_SCORES[video_rule], cache, cfg.videos, named_by,
                                                     device, progress, kept)
    branches = {"video": video_probs}
    weights = _fusion_weights(cfg, profile.fuse_weight)  # [lambda, 1 - lambda] of Eq. 4, None: not fused
    if cfg.attributes is not None:
        attrs_model = load_attrs_branch(cfg.attrs_checkpoint, class_names, clip=(vm.clip, vm.spec), device=device,
                                        class_texts=class_texts, class_texts_source=cfg.class_texts)
        attr_ids, attr_probs = attrs_scores(cfg.attributes, cfg.compat, attrs_model, ATTRS_SCORES[profile.attrs_scores])
        position = {vid: i for i, vid in enumerate(attr_ids)}
        missing = [vid for vid in ids if vid not in position]
        if missing:
            raise InputError(f"{cfg.attributes} has no attributes for {len(missing)} scored videos, e.g. {missing[:3]}")
        branches["attrs"] = attr_probs[[position[vid] for vid in ids]]
        if weights is not None:
            branches["fused"] = fuse_scores([branches["video"], branches["attrs"]], weights)
    make_folder(cfg.out)
    clear_outputs(cfg.out, guard, cfg.plots)
    metrics, files = {}, {}
    rules = {"video": video_rule, "attrs": profile.attrs_scores, "fused": FUSED}
    options = {"full": {}, "zero-shot-half": {"repeats": cfg.repeats, "seed": cfg.seed},
               "k600-splits": {"splits": cfg.splits} if cfg.splits else {},
               "base-novel": {"base_classes": cfg.base_classes, "novel_classes": cfg.novel_classes},
               "splits": {"split_lists": split_lists}}[cfg.protocol]
    if novel_vm is not None:
        options["novel_table"] = _novel_table(cfg, novel_vm, video_rule, device, progress, failed)
        files["novel_video"] = options["novel_table"].source
    for name, probs in branches.items():
        files[name] = write_score_csv(cfg.out / f"{name}_scores.csv", ids, labels, probs, class_names)
        write_csv_meta(files[name], cfg.compat, rules[name])
        table = ScoreTable(ids, labels, probs.astype(np.float32), class_names, files[name])
        metrics[name] = run_protocol(cfg.protocol, table, **options)
    if frame_scorer is not None:  # e.g. their test_zeroshot.py: frame embeddings, not the branch's scores
        frames = torch.cat(kept) if cache is None else torch.from_numpy(
            np.stack([cache.embeddings(i) for i in range(len(cache))]).astype(np.float32))  # [N, V, T, D]
        metrics["video"] = frame_scorer(frames.flatten(1, 2), vm.texts.pooled.cpu(), labels, cfg.repeats, cfg.seed)
    if cfg.plots is not None:
        files.update(_plots(cfg, branches, labels, class_names))
    write_metrics_json(cfg.out / "metrics.json", {
        "protocol": cfg.protocol, "fuse": weights[0] if weights else None, "compat": cfg.compat, "videos": len(ids),
        "failed": failed, "seconds": time.perf_counter() - started, "config": asdict(cfg), "metrics": metrics},
        EVAL_METRICS_KIND)
    return EvalSummary(cfg.out, len(ids), metrics, files, failed)


def _split_classes(vm: VideoClassifier, base: int) -> tuple[VideoClassifier, VideoClassifier]:
    """`vm` over B + N classes split into the classifier of the first `base` classes and that of the rest."""
    first, rest = torch.arange(base), torch.arange(base, len(vm.names))
    return (replace(vm, texts=vm.texts.select(first.to(vm.texts.pooled.device)), names=vm.names[:base]),
            replace(vm, texts=vm.texts.select(rest.to(vm.texts.pooled.device)), names=vm.names[base:]))


def _novel_table(cfg: EvalConfig, vm: VideoClassifier, video_rule: str, device, progress: Progress,
                 failed: list[str]) -> ScoreTable:
    """The novel classes' own test set scored among the novel classes (`vm`) by the score rule `video_rule`,
    written to novel_video_scores.csv; its undecodable videos are added to `failed`."""
    cache = _test_cache(cfg, cfg.novel_features)
    if cache is not None:
        check_same_model(vm.spec, str(cfg.checkpoint or f"--model {vm.spec.model_name}"), cache.meta, str(cache.path),
                         cfg.allow_model_mismatch)
        cache.check_classes(len(vm.names), f"--novel-classes {cfg.novel_classes}")
    ids, labels, probs, lost = _video_scores(cfg, vm, VIDEO_SCORES[video_rule], cache, cfg.novel_videos,
                                             f"--novel-classes {cfg.novel_classes}", device, progress)
    failed += lost
    path = write_score_csv(cfg.out / "novel_video_scores.csv", ids, labels, probs, vm.names)
    write_csv_meta(path, cfg.compat, video_rule)
    return ScoreTable(ids, labels, probs.astype(np.float32), vm.names, path)


def _split_lists(cfg: EvalConfig, cache: FeatureCache | None, class_names: list[str]) -> list[SplitList]:
    """--protocol splits: the split lists, each checked against the videos to score before any is scored
    (a listed video the cache or --videos lacks is an InputError naming the list and the video)."""
    if cfg.protocol != "splits":
        return []
    lists = read_split_lists(cfg.split_lists)
    if cache is not None:
        ids, where = cache.video_ids, f"the cache {cache.path}"
    else:
        ids = [e.video_id for e in read_video_list(cfg.videos, cfg.root, class_names).entries]
        where = f"--videos {cfg.videos}"
    for split in lists:
        match_videos(split.video_ids, ids, f"split list {split.name}", where)
    return lists


def _fusion_weights(cfg: EvalConfig, fuse_weight: float | None) -> list[float] | None:
    """The weights of Eq. 4 over (video, attributes): --fuse's lambda, else the profile's default where it
    has one (the authors fuse 0.7 / 0.3); None where nothing is fused (no attributes, or bike without --fuse)."""
    if cfg.attributes is None or (cfg.fuse is None and fuse_weight is None):
        return None
    return [cfg.fuse, 1.0 - cfg.fuse] if cfg.fuse is not None else default_weights(2, fuse_weight)


def _video_model(cfg: EvalConfig, class_names: list[str] | None, cache: FeatureCache | None,
                 device, class_texts: dict | None = None) -> VideoClassifier:
    """The Video branch: a trained checkpoint (bike's or the authors'), or zero-shot CLIP with the chosen head."""
    bike_checkpoint = cfg.checkpoint is not None and not is_authors_checkpoint(cfg.checkpoint)
    vm = load_video_branch(cfg.checkpoint, class_names=class_names, model=cfg.model, pretrained=cfg.pretrained,
                           quick_gelu=cfg.quick_gelu, head=cfg.head, vcs_tokens=cfg.vcs_tokens,
                           templates=cfg.templates, frames=cfg.frames, cache=cache, device=device,
                           allow_model_mismatch=cfg.allow_model_mismatch,
                           ignore_visual_weights=cfg.ignore_visual_weights, class_texts=class_texts,
                           class_texts_source=cfg.class_texts)
    trained = recorded_profile(vm.settings.get("compat"))
    if bike_checkpoint and trained != cfg.compat:  # training and scoring rules are separate choices
        log.warning("%s was trained with --compat %s; scoring with --compat %s", cfg.checkpoint, trained, cfg.compat)
    return vm


def _test_cache(cfg: EvalConfig, path: Path | None) -> FeatureCache | None:
    """The test cache at `path` (None: none), of this --compat and, where --views is given, of those views."""
    if path is None:
        return None
    cache = FeatureCache(path, need_rows=True)
    check_same_profile(cfg.compat, cache.meta.compat, cache.path)
    layout = parse_views(cfg.views, get_profile(cfg.compat)) if cfg.views else None
    if layout and (layout.clips, layout.crops) != (cache.meta.clips, cache.meta.crops):
        raise InputError(f"--views {cfg.views} differs from the {cache.meta.clips}x{cache.meta.crops} views "
                         f"{cache.path} holds (extract the cache with --views {cfg.views})")
    return cache


def _video_scores(cfg: EvalConfig, vm: VideoClassifier, rule, cache: FeatureCache | None, videos: Path | None,
                  named_by: object, device, progress: Progress, kept: list | None = None) -> Scores:
    """(video ids, labels, probabilities [N, K], failed ids) of the Video branch by `rule`, of `cache`, else
    of the video list `videos` decoded here. A cache numbers its labels by its own class names: they are
    renumbered by `vm`'s, which `named_by` (an option, a checkpoint) gave."""
    if cache is not None:
        ids, labels, scores, failed = cache_scores(vm, rule, cache, cfg.batch_size, device, progress)
        labels = labels_by_names(labels, vm.names, list(cache.meta.class_names or []), named_by, cache.path)
        return ids, labels, scores, failed
    layout = parse_views(cfg.views or "1x1", get_profile(cfg.compat))
    return decoded_scores(vm, rule, videos, cfg.root, layout, get_profile(cfg.compat), cfg.batch_size, cfg.workers,
                          device, progress, kept)


def _plots(cfg: EvalConfig, branches: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str]) -> dict:
    """Per-class accuracy (single-label sets) and, with both branches, the fusion-weight curve."""
    from bike_cli.report import figures as plots

    written = {}
    if labels.ndim == 1:
        shown = _shown_classes(branches, labels, class_names)
        if shown is not None:
            values, names, title, gap = shown
            written["per_class_plot"] = plots.plot_per_class_accuracy(values, names, title, cfg.plots / PLOT_FILES[0],
                                                                      gap=gap)
        if "attrs" in branches:
            lambdas, top1 = fusion_curve(branches["video"], branches["attrs"], labels)
            written["fusion_plot"] = plots.plot_fusion_curve(lambdas, top1, cfg.fuse, cfg.plots / PLOT_FILES[1])
    else:
        log.warning("--plots: per-class accuracy and the fusion curve are drawn for single-label sets only")
    return written


PER_CLASS_SHOWN = 20  # of many classes, the per-class figure draws the 20 worst and the 20 best


def _shown_classes(branches: dict[str, np.ndarray], labels: np.ndarray,
                   class_names: list[str]) -> tuple[dict[str, np.ndarray], list[str], str, int | None] | None:
    """What the per-class figure draws: the classes with test videos, sorted by the first branch's top-1,
    only the worst and best `PER_CLASS_SHOWN` of more; (values per branch, names, title, gap) or None."""
    accuracy = {name: per_class_accuracy(probs, labels) for name, probs in branches.items()}  # [K] each
    first = next(iter(accuracy))
    order, cut = worst_and_best(accuracy[first], PER_CLASS_SHOWN)
    present, total = int(np.isfinite(accuracy[first]).sum()), len(class_names)
    if not present:
        log.warning("--plots: no class has a labelled test video; no per-class figure")
        return None
    without = f"; {total - present} of the {total} classes have none" if present < total else ""
    what = (f"the {PER_CLASS_SHOWN} worst and {PER_CLASS_SHOWN} best of the {present} classes with test videos"
            if cut else f"the {present} classes with test videos")
    log.info("--plots: %s shows %s, sorted by %s top-1%s", PLOT_FILES[0], what, first, without)
    title = f"per-class top-1 (%), sorted by the {first} branch\n{what}{without}"
    return ({name: values[order] for name, values in accuracy.items()}, [class_names[c] for c in order], title,
            PER_CLASS_SHOWN if cut else None)
