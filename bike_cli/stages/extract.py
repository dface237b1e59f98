"""Stage 1, `extract-features`: videos -> HDF5 cache of CLIP frame embeddings [N, V, T, D].

Resumable and crash-safe (see `bike_cli.io.feature_cache`), split across processes under
`accelerate launch` (each process takes every world-size-th remaining video and writes its own part
files; rank 0 merges them in list order, so the result equals a single-process run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bike_cli import __version__
from bike_cli.config.profile import get_profile
from bike_cli.config.ranges import check_choice, check_ranges
from bike_cli.config.stages import ExtractConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.data.clip_dataset import MultiViewClips
from bike_cli.data.decoding.read import DECODERS
from bike_cli.data.sampling import SAMPLING_MODES, parse_views, view_resize_mode
from bike_cli.data.video_lists import VideoList, read_video_list
from bike_cli.engine.frame_encoder import FrameEncoder, extract_share
from bike_cli.engine.runtime import (
    PRECISIONS,
    DistContext,
    cores_beside_workers,
    init_distributed,
    loader_workers,
    resolve_device,
    writer_lock,
)
from bike_cli.errors import InputError
from bike_cli.io.atomic import make_folder
from bike_cli.io.checkpoints import authors_quick_gelu
from bike_cli.io.feature_cache import (
    CacheMeta,
    Failure,
    FeatureCache,
    PartsIndex,
    finish,
    merge,
    parts_dir_for,
    read_meta_file,
    remove_stale_tmp,
    scan_parts,
    write_failures_csv,
    write_meta_file,
)
from bike_cli.io.guard import PathGuard, WriterLock, check_file_output, file_or_none
from bike_cli.models.clip import load_clip, visual_sha256
from bike_cli.progress import Progress

log = logging.getLogger(__name__)


def _check(cfg: ExtractConfig) -> None:
    """Every option, checked before anything is loaded."""
    check_ranges(cfg)
    parse_views(cfg.views, get_profile(cfg.compat))
    check_choice("--decoder", cfg.decoder, DECODERS)
    check_choice("--sampling", cfg.sampling, SAMPLING_MODES)
    check_choice("--precision", cfg.precision, PRECISIONS)
    if cfg.out.suffix not in (".h5", ".hdf5"):
        raise InputError(f"--out {cfg.out} should end in .h5 (it is an HDF5 feature cache)")
    check_file_output("--out", cfg.out)
    check_file_output("--failures", cfg.failures_path)
    _guard(cfg)


def _guard(cfg: ExtractConfig, videos: Iterable[Path] = ()) -> PathGuard:
    """The run's paths, checked: no output is an input (the listed `videos` too) or another output."""
    return PathGuard({"--list": cfg.list_path, "--classes": cfg.classes, "--pretrained": file_or_none(cfg.pretrained)},
                     {"--out": cfg.out, "--failures": cfg.failures_path,
                      "the parts folder of --out": parts_dir_for(cfg.out),
                      "the lock file of --out": WriterLock(cfg.out).path}, listed={"a video of --list": videos})


@dataclass
class ExtractSummary:
    """What a run did."""

    cache: Path
    failures_csv: Path
    videos_in_list: int
    already_done: int
    extracted: int
    failed: int
    cached: int
    seconds: float
    failures: list[Failure] = field(default_factory=list)
    is_main: bool = True  # False on the other processes of a distributed run (they merge nothing)


def _prepare_outputs(cfg: ExtractConfig, meta: CacheMeta, dist: DistContext, guard: PathGuard) -> PartsIndex:
    """Check an existing cache and parts against `meta`, then index what is already done."""
    parts_dir = parts_dir_for(cfg.out)
    if dist.is_main and cfg.overwrite:
        guard.discard(cfg.out, parts_dir)
    dist.barrier()
    if cfg.out.exists():
        meta.check_compatible(FeatureCache(cfg.out).meta, cfg.out)
    parts_meta = read_meta_file(parts_dir)
    if parts_meta is not None:
        meta.check_compatible(parts_meta, parts_dir)
    if dist.is_main:
        write_meta_file(parts_dir, meta)
        remove_stale_tmp(parts_dir)
        for path in (cfg.out, cfg.failures_path):
            guard.sweep_temps_of(path)
    dist.barrier()
    parts = scan_parts(parts_dir)
    dist.barrier()  # every process has read the same parts before anyone writes a new one
    return parts


def run_extraction(cfg: ExtractConfig, progress: Progress | None = None) -> ExtractSummary:
    """Extract frame embeddings for every video of the list that the cache does not hold yet."""
    started = time.perf_counter()
    _check(cfg)
    progress = progress or Progress()
    class_names = read_class_names(cfg.classes) if cfg.classes else None
    video_list = read_video_list(cfg.list_path, root=cfg.root, class_names=class_names)
    num_classes = len(class_names) if class_names else 1 + max((max(e.labels) for e in video_list.entries
                                                                  if e.labels), default=-1)
    guard = _guard(cfg, [e.path for e in video_list.entries])
    dist = init_distributed()
    with writer_lock(cfg.out, folder=False, is_main=dist.is_main, world_size=dist.world_size):
        return _extract_locked(cfg, video_list, class_names, num_classes, dist, progress, started, guard)


def _extract_locked(cfg: ExtractConfig, video_list: VideoList, class_names: list[str] | None, num_classes: int,
                    dist: DistContext, progress: Progress, started: float, guard: PathGuard) -> ExtractSummary:
    """The extraction proper, while this launch holds the cache's WriterLock."""
    layout = parse_views(cfg.views, get_profile(cfg.compat))
    model, spec = load_clip(cfg.model, cfg.pretrained, quick_gelu=authors_quick_gelu(cfg.pretrained, cfg.quick_gelu))
    meta = CacheMeta(model_name=spec.model_name, pretrained=spec.pretrained, checkpoint_sha256=spec.checkpoint_sha256,
                     quick_gelu=spec.quick_gelu, image_size=spec.image_size, embed_dim=spec.embed_dim,
                     frames=cfg.frames, clips=layout.clips, crops=layout.crops, sampling_mode=cfg.sampling,
                     seed=cfg.seed, decoder=cfg.decoder, multilabel=video_list.multilabel, num_classes=num_classes,
                     class_names=tuple(class_names or ()), mean=tuple(spec.mean), std=tuple(spec.std),
                     bike_version=__version__, compat=cfg.compat, visual_sha256=visual_sha256(model.state_dict()),
                     resize_mode=view_resize_mode(spec.resize_mode, layout.crops), interpolation=spec.interpolation)
    make_folder(cfg.out.parent)
    parts = _prepare_outputs(cfg, meta, dist, guard)
    done = set(parts.done_ids)
    if cfg.out.exists():
        done.update(FeatureCache(cfg.out).video_ids)
    todo = [(i, e) for i, e in enumerate(video_list.entries) if e.video_id not in done]
    mine = todo[dist.rank :: dist.world_size]
    log.info("%d videos in %s: %d already cached, %d to extract%s", len(video_list), cfg.list_path,
             len(video_list) - len(todo), len(todo),
             f" ({len(mine)} on process {dist.rank} of {dist.world_size})" if dist.world_size > 1 else "")
    device = resolve_device(cfg.device) if cfg.device else dist.device
    encoder = FrameEncoder(model, spec, device, cfg.precision)
    workers = loader_workers(cfg.workers, len(mine))
    with cores_beside_workers(device, workers):
        if mine:
            clips = MultiViewClips(mine, frames=cfg.frames, layout=layout, size=meta.image_size, mode=cfg.sampling,
                                   seed=cfg.seed, decoder=cfg.decoder, profile=get_profile(cfg.compat),
                                   resize_mode=meta.resize_mode)
            extract_share(clips, encoder, parts_dir_for(cfg.out), video_list, meta, batch_size=cfg.batch_size,
                          workers=workers, dist=dist, progress=progress)
    cached, failures = _merge_shares(cfg, meta, dist)
    return ExtractSummary(cache=cfg.out, failures_csv=cfg.failures_path, videos_in_list=len(video_list),
                          already_done=len(video_list) - len(todo), extracted=len(todo) - len(failures),
                          failed=len(failures), cached=cached, seconds=time.perf_counter() - started,
                          failures=failures, is_main=dist.is_main)

def _merge_shares(cfg: ExtractConfig, meta: CacheMeta, dist: DistContext) -> tuple[int, list[Failure]]:
    """Once every process wrote its share, rank 0 merges the parts into the cache and writes the failures
    CSV; returns (videos cached, failures), (0, []) on the other processes."""
    dist.barrier()
    failures: list[Failure] = []
    cached = 0
    if dist.is_main:
        parts = scan_parts(parts_dir_for(cfg.out))
        cached = merge(cfg.out, parts, meta) if (parts.files or not cfg.out.exists()) else len(FeatureCache(cfg.out))
        failures = [f for vid, f in parts.failures.items() if vid not in parts.done_ids]
        write_failures_csv(cfg.failures_path, failures)
        finish(parts_dir_for(cfg.out))
    dist.barrier()
    return cached, failures
