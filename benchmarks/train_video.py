"""Benchmark of `bike train-video`: its data paths against pure compute, and its peak memory.

Side by side in one run (device auto: CUDA if available), each timing repeated --repeats times
(interleaved) and the median reported:

1. cache   Backbone frozen, from a synthetic feature cache written with bike_cli.io.feature_cache
           (random fp16 frame embeddings, random labels, 1 view) and random class texts with D = 512
           (pooled [K, D], tokens [K, M, D], a mask of 1..M real tokens per class; no text encoder).
           Head as the paper's default: temporal transformer (6 layers, 8 heads), VCS, global batch 256.
           (a) the stage's training step (`Trainer._epoch`) on batches already in memory;
           (b) the same step fed by the DataLoader the stage builds (CachedClips + EpochBatches),
               with 0, 1 and 2 workers; target (b) <= 1.15 x (a).
           Also: the loader alone, and the data path of one batch taken apart (h5py reads,
           __getitem__, collate) next to batched alternatives (one sorted h5py read, an in-memory array).
2. e2e     End to end (CLIP's visual tower fine-tuned; random init) on generated videos and on the real
           clips of ../shared/data/clips repeated (skipped when absent): the time `Trainer._epoch` waits
           in `next(iterator)` as a share of the step time, with the stage's DataLoader (TrainClips,
           collate_train, 2 workers), next to the step on the same batches in memory.
           Target: stall <= 10 % of step time.
3. memory  Peak memory of end-to-end training (same model and batch) without and with gradient
           checkpointing, each in a fresh subprocess: ru_maxrss on the CPU (it never decreases, hence
           one process per setting), torch.cuda.max_memory_allocated on CUDA.
4. memcache  The cache held in memory (`--cache-in-memory`, `MemoryBatches`) on a synthetic cache of
           --memcache-videos rows (240,000: Kinetics-400) in a fresh process: load time, peak RSS, and
           the first steps of an epoch with the mean head, VCS and VCS + transformer fed by it, by the
           same batches gathered beforehand, and by the DataLoader; see benchmarks/train_memcache.py.

The step is the training loop's own `Trainer._epoch` (bike_cli.engine.training_loop), on a model,
optimiser, scheduler and Accelerator built as `run_train_video` builds them; the batches pass through
a wrapper that times each `next()`. The CPU time other processes used during each part is recorded
("foreign CPU"): timings taken while the machine was shared are not to be trusted.

    .venv/bin/python benchmarks/train_video.py --out-json train_video.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import h5py
import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, default_collate

from bike_cli.config.profile import get_profile
from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data.class_names import read_class_names
from bike_cli.data.clip_dataset import collate_train
from bike_cli.data.synthetic import make_sample_dataset
from bike_cli.engine.frame_encoder import to_unit_pixels
from bike_cli.engine.run_folder import RunFolder
from bike_cli.engine.training_loop import EpochBatches, LoopSettings, Trainer, make_accelerator, warmup_cosine
from bike_cli.io.feature_cache import Batch, CacheMeta, FeatureCache, PartWriter, finish, merge, scan_parts
from bike_cli.models.clip import load_clip
from bike_cli.models.heads import VideoHead
from bike_cli.models.loss import LogitScale
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import ClassTexts, encode_class_texts
from bike_cli.models.video_branch import VideoBranch
from bike_cli.progress import Progress
from bike_cli.stages.train_video import train_dataset

CLIPS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
READABLE_CLIPS = (  # the clips with a video stream (nasa_audio_only.mp3 has none)
    "arm_wrestling.mp4", "arm_wrestling_vp9.webm", "cleaning_pool.mp4", "apply_eye_makeup.avi",
    "basketball.mp4", "flipping_pancake.mkv", "rotated90_3frames.mov",
)
CACHE_TARGET = 1.15  # (b) / (a)
STALL_TARGET = 0.10  # share of the step time


# ------------------------------------------------------------------------------------- timing


class TimedBatches:
    """Iterates `source` as `Trainer._epoch` does, timing each `next()` (wait) and what runs between."""

    def __init__(self, source: Iterable) -> None:
        self.source = source
        self.waits: list[float] = []  # seconds in next(), iter() included for the first batch
        self.computes: list[float] = []  # seconds from a batch's arrival to the next request
        self.clips = 0

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator:
        requested = time.perf_counter()
        iterator = iter(self.source)  # a DataLoader starts its workers here
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            arrived = time.perf_counter()
            self.waits.append(arrived - requested)
            self.clips += batch[0].shape[0]
            yield batch
            requested = time.perf_counter()
            self.computes.append(requested - arrived)


@dataclass
class EpochTiming:
    seconds: float  # the whole `Trainer._epoch` call
    waits: list[float]
    computes: list[float]
    clips: int
    foreign_cpu: float  # share of the machine other processes used meanwhile (`ForeignCpu`)

    def figures(self) -> dict[str, float]:
        wait, compute = sum(self.waits), sum(self.computes)
        rest_wait, rest_compute = sum(self.waits[1:]), sum(self.computes[1:])
        return {"epoch_s": self.seconds, "clips_per_s": self.clips / self.seconds,
                "step_s": (wait + compute) / len(self.waits), "first_wait_s": self.waits[0],
                "wait_per_step_ms": 1000 * wait / len(self.waits), "stall": wait / (wait + compute),
                "stall_after_first": rest_wait / max(1e-12, rest_wait + rest_compute), "foreign_cpu": self.foreign_cpu}


@dataclass
class Rig:
    """What the stage's training loop (`Trainer._epoch`) takes, built as `run_train_video` builds it."""

    trainer: Trainer
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batch_inputs: Callable[[object], tuple]

    def epoch(self, source: Iterable, epoch: int) -> EpochTiming:
        timed, watch = TimedBatches(source), ForeignCpu()
        started = time.perf_counter()
        self.trainer._epoch(self.model, timed, self.optimizer, self.scheduler, self.batch_inputs, Progress(), epoch)
        return EpochTiming(time.perf_counter() - started, timed.waits, timed.computes, timed.clips, watch.share())


def make_rig(cfg: TrainVideoConfig, model: VideoBranch, class_texts: ClassTexts, spec, steps_per_epoch: int,
             accelerator) -> Rig:
    """AdamW groups, warm-up + cosine schedule, `accelerator.prepare` and batch_inputs, as in the stage."""
    device = accelerator.device
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.param_groups(cfg.lr, cfg.clip_lr_ratio, cfg.weight_decay), lr=cfg.lr,
                                  weight_decay=cfg.weight_decay, betas=(0.9, 0.98), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch))
    model, optimizer = accelerator.prepare(model, optimizer)
    texts = ClassTexts(*(t.to(device) for t in (class_texts.pooled, class_texts.tokens, class_texts.token_mask)))

    def batch_inputs(batch) -> tuple:  # the stage's own, in run_train_video
        inputs, targets = batch
        if inputs.dtype == torch.uint8:  # decoded pixels (end to end)
            inputs = to_unit_pixels(inputs, spec, device)
        else:
            inputs = inputs.to(device, non_blocking=True).float()
        return inputs, targets.to(device), texts

    trainer = Trainer(LoopSettings.of(cfg), accelerator, RunFolder(cfg.out, "train-video"))
    return Rig(trainer, model, optimizer, scheduler, batch_inputs)


def stage_loader(dataset, cfg: TrainVideoConfig, workers: int, epoch: int) -> DataLoader:
    """The training DataLoader exactly as `run_train_video` builds it, set to `epoch`."""
    batches = EpochBatches(len(dataset), cfg.batch_size, 0, 1, cfg.seed)
    batches.set_epoch(epoch)
    dataset.set_epoch(epoch)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                      collate_fn=collate_train if cfg.videos else None, pin_memory=torch.cuda.is_available())


def median_figures(runs: list[EpochTiming]) -> dict[str, float]:
    """Medians over the repeats, plus the fastest epoch (the one least disturbed by other processes)."""
    per_run = [r.figures() for r in runs]
    figures = {key: statistics.median(f[key] for f in per_run) for key in per_run[0]}
    figures["best_epoch_s"] = min(r.seconds for r in runs)
    return figures


def compare_to_memory(figures: dict[str, dict[str, float]]) -> None:
    """Add each setting's epoch time over (a)'s: of the medians and of the fastest epochs."""
    for f in figures.values():
        f["over_memory"] = f["epoch_s"] / figures["memory"]["epoch_s"]
        f["best_over_memory"] = f["best_epoch_s"] / figures["memory"]["best_epoch_s"]


def best_ms(fn: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of `repeats` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


class ForeignCpu:
    """Share of the machine's CPU time used by processes outside this one's tree since it was made."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.started = (time.perf_counter(), self._busy(), self._own())

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def _own(self) -> float:
        t = self.me.cpu_times()  # children: reaped DataLoader workers and subprocesses
        return t.user + t.system + t.children_user + t.children_system

    def share(self) -> float:
        wall, busy, own = self.started
        foreign = (self._busy() - busy) - (self._own() - own)
        return max(0.0, foreign) / ((time.perf_counter() - wall) * (os.cpu_count() or 1))


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ 1. from a cache


def build_cache(path: Path, videos: int, frames: int, dim: int, classes: int, seed: int = 0) -> Path:
    """A feature cache of random fp16 embeddings [videos, 1, frames, dim], written as the stage writes one."""
    rng = np.random.default_rng(seed)
    parts_dir = path.with_name(path.name + ".parts")
    parts_dir.mkdir(parents=True)
    writer = PartWriter(parts_dir, 0)
    for start in range(0, videos, 512):
        n = min(512, videos - start)
        writer.write(Batch(list_index=np.arange(start, start + n), video_ids=[f"v{i:06d}" for i in range(start, start + n)],
                           embeddings=rng.standard_normal((n, 1, frames, dim), dtype=np.float32).astype(np.float16),
                           labels=rng.integers(0, classes, n), num_frames=np.full(n, 300), decoders=["decord"] * n))
    meta = CacheMeta(model_name="ViT-B-32", pretrained="none", checkpoint_sha256=None, quick_gelu=False,
                     image_size=224, embed_dim=dim, frames=frames, clips=1, crops=1, sampling_mode="train",
                     seed=seed, decoder="decord", multilabel=False, num_classes=classes,
                     class_names=tuple(f"class {k}" for k in range(classes)))
    merge(path, scan_parts(parts_dir), meta)
    finish(parts_dir)
    return path


def random_class_texts(classes: int, tokens: int, dim: int, seed: int = 0) -> ClassTexts:
    """pooled [K, D], tokens [K, M, D] and a mask of 1..M real tokens per class, all random."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, tokens + 1, (classes, 1), generator=g)  # [K, 1]
    mask = torch.arange(tokens) < counts  # [K, M]
    token_emb = torch.randn(classes, tokens, dim, generator=g) * mask.unsqueeze(-1)  # padding rows zero
    return ClassTexts(torch.randn(classes, dim, generator=g), token_emb, mask)


def data_breakdown(cfg: TrainVideoConfig, path: Path) -> dict[str, float]:
    """Milliseconds per batch of the data path's parts, and of batched or cached alternatives."""
    dataset = train_dataset(cfg, FeatureCache(path), [], 0)
    cache = dataset.cache
    positions = next(iter(EpochBatches(len(dataset), cfg.batch_size, 0, 1, cfg.seed)))
    rows = np.sort(dataset.rows[positions])
    cache.embeddings(0)  # open the file outside the timings
    items = [dataset[i] for i in positions]
    everything = cache.embeddings(slice(None))  # [N, V, T, D], the in-memory alternative
    with h5py.File(path, "r") as h5:
        kept = h5["embeddings"]  # one Dataset object, looked up once
        out = {"h5py reads, FeatureCache.embeddings per row": best_ms(lambda: [cache.embeddings(int(r)) for r in rows]),
               "h5py reads per row, Dataset looked up once": best_ms(lambda: [kept[int(r)] for r in rows]),
               "h5py one fancy-index read of the sorted rows": best_ms(lambda: kept[rows]),
               "CachedClips.__getitem__ of every item": best_ms(lambda: [dataset[i] for i in positions]),
               "default_collate": best_ms(lambda: default_collate(items)),
               "gather from an in-memory array": best_ms(lambda: torch.from_numpy(everything[rows][:, 0]))}
    cache.close()  # no open HDF5 handle may be inherited by forked workers
    return out


def bench_cache(args: argparse.Namespace, tmp: Path, accelerator) -> dict:
    """(a) in memory vs (b) the stage's DataLoader with each worker count; the loader alone."""
    path = build_cache(tmp / "cache.h5", args.cache_videos, args.frames, args.dim, args.classes)
    cfg = TrainVideoConfig(features=path, frames=args.frames, batch_size=args.cache_batch)
    head = VideoHead(args.dim, head=cfg.head, temporal=cfg.temporal, tau=cfg.tau, layers=cfg.temporal_layers,
                     heads=max(1, args.dim // 64))  # ViT-B-32: text width 512 -> 8 heads
    new_dataset = lambda: train_dataset(cfg, FeatureCache(path), [], 0)  # noqa: E731
    dataset = new_dataset()
    memory = list(stage_loader(dataset, cfg, 0, 1))  # the in-memory batches of (a)
    dataset.cache.close()
    rig = make_rig(cfg, VideoBranch(head, LogitScale(), None), random_class_texts(
        args.classes, args.tokens, args.dim), None, len(memory), accelerator)
    rig.epoch(memory[:2], 0)  # warm-up, untimed
    runs: dict[str, list[EpochTiming]] = {}
    loader_only: dict[str, list[float]] = {}
    for r in range(args.repeats):
        runs.setdefault("memory", []).append(rig.epoch(memory, 1))
        for w in args.cache_workers:
            dataset = new_dataset()
            runs.setdefault(f"workers{w}", []).append(rig.epoch(stage_loader(dataset, cfg, w, r + 1), r + 1))
            dataset.cache.close()
            dataset = new_dataset()
            started = time.perf_counter()
            for _ in stage_loader(dataset, cfg, w, r + 1):
                pass
            loader_only.setdefault(f"workers{w}", []).append(time.perf_counter() - started)
            dataset.cache.close()
        progress(f"cache: repeat {r + 1}/{args.repeats} done")
    accelerator.free_memory()  # drop the prepared model and optimiser (Accelerate keeps references)
    figures = {name: median_figures(timings) for name, timings in runs.items()}
    compare_to_memory(figures)
    clips = len(memory) * cfg.batch_size
    loader = {name: {"epoch_s": statistics.median(s), "clips_per_s": clips / statistics.median(s)}
              for name, s in loader_only.items()}
    return {"figures": figures, "loader_only": loader, "breakdown": data_breakdown(cfg, path),
            "steps_per_epoch": len(memory), "batch": cfg.batch_size,
            "times": {name: [t.figures() for t in timings] for name, timings in runs.items()}}


# --------------------------------------------------------------------------------- 2. end to end


def synthetic_videos(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path, Path]:
    """(list, root, classes) of generated videos: 4 classes, all in the training list."""
    height, width = (int(v) for v in args.e2e_size.lower().split("x"))
    data = make_sample_dataset(tmp / "generated", videos_per_class=max(1, args.e2e_videos // 4), val_fraction=0.0,
                               num_frames=args.e2e_video_frames, size=(height, width), seed=0)
    return data.train, data.root, data.classes


def real_videos(args: argparse.Namespace, tmp: Path) -> tuple[Path, Path, Path] | None:
    """(list, root, classes) of the readable real clips linked in turn to --e2e-videos entries."""
    sources = [args.clips / name for name in READABLE_CLIPS if (args.clips / name).is_file()]
    if not sources:
        return None
    root = tmp / "real"
    root.mkdir()
    lines = []
    for i in range(args.e2e_videos):
        source = sources[i % len(sources)]
        link = root / f"clip_{i:03d}{source.suffix}"
        link.symlink_to(source)
        lines.append(f"{link.name} {i % len(sources)}\n")
    (root / "list.txt").write_text("".join(lines))
    (root / "classes.txt").write_text("".join(f"{s.stem.replace('_', ' ')}\n" for s in sources))
    return root / "list.txt", root, root / "classes.txt"


def e2e_config(model: str, files: tuple[Path, Path, Path], args: argparse.Namespace, **extra) -> TrainVideoConfig:
    videos, root, classes = files
    return TrainVideoConfig(videos=videos, root=root, classes=classes, model=model, pretrained="none",
                            frames=args.frames, batch_size=args.e2e_batch, **extra)


def build_e2e(cfg: TrainVideoConfig, accelerator) -> tuple[Rig, object]:
    """Model, class texts, optimiser and training set of an end-to-end run, as `run_train_video` builds them."""
    device = accelerator.device
    class_names = read_class_names(cfg.classes)
    clip_model, spec = load_clip(cfg.model, cfg.pretrained, quick_gelu=cfg.quick_gelu, device=device)
    class_texts = encode_class_texts(clip_model, get_tokenizer(cfg.model), class_names, cfg.templates,
                                     cfg.vcs_tokens or "words")
    text_width = clip_model.ln_final.weight.shape[0]
    head = VideoHead(spec.embed_dim, head=cfg.head, temporal=cfg.temporal, tau=cfg.tau,
                     layers=cfg.temporal_layers, heads=max(1, text_width // 64))
    visual = clip_model.visual
    model = VideoBranch(head, LogitScale(clip_model.logit_scale), visual)
    del clip_model
    if cfg.grad_checkpointing:
        visual.set_grad_checkpointing(True)
        if cfg.temporal == "transformer":
            head.temporal.grad_checkpointing = True
    dataset = train_dataset(cfg, None, class_names, spec.image_size)
    steps = len(EpochBatches(len(dataset), cfg.batch_size, 0, 1, cfg.seed))
    return make_rig(cfg, model, class_texts, spec, steps, accelerator), dataset


def bench_e2e_one(cfg: TrainVideoConfig, workers: int, repeats: int, accelerator) -> dict:
    """The stage's loader with `workers` against the same step on in-memory batches."""
    rig, dataset = build_e2e(cfg, accelerator)
    memory = list(stage_loader(dataset, cfg, 0, 1))
    rig.epoch(memory[:1], 0)  # warm-up, untimed
    runs: dict[str, list[EpochTiming]] = {"memory": [], f"workers{workers}": []}
    for r in range(repeats):
        runs["memory"].append(rig.epoch(memory, 1))
        runs[f"workers{workers}"].append(rig.epoch(stage_loader(dataset, cfg, workers, r + 1), r + 1))
    accelerator.free_memory()  # drop the prepared model and optimiser (Accelerate keeps references)
    figures = {name: median_figures(timings) for name, timings in runs.items()}
    compare_to_memory(figures)
    return {"figures": figures, "steps_per_epoch": len(memory), "batch": cfg.batch_size,
            "times": {name: [t.figures() for t in timings] for name, timings in runs.items()}}


def bench_e2e(args: argparse.Namespace, data: dict[str, tuple[Path, Path, Path]], accelerator) -> dict:
    results = {}
    for model in args.e2e_models:
        for data_name, files in data.items():
            key = f"{model} / {data_name}"
            results[key] = bench_e2e_one(e2e_config(model, files, args), args.e2e_workers, args.repeats, accelerator)
            progress(f"e2e: {key} done")
    return results


# ------------------------------------------------------------------------------------- 3. memory


def peak_rss_mib() -> float:
    """This process image's peak RSS: VmHWM where /proc has it, else ru_maxrss.

    ru_maxrss alone can report the parent's size: Linux folds the pre-exec memory's peak into it.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory_child(spec_json: str) -> None:
    """In a fresh process: a few end-to-end steps (workers 0); prints the peak memory as JSON."""
    spec = json.loads(spec_json)
    files = tuple(Path(p) for p in spec["files"])
    cfg = TrainVideoConfig(videos=files[0], root=files[1], classes=files[2], model=spec["model"], pretrained="none",
                           frames=spec["frames"], batch_size=spec["batch"], workers=0,
                           grad_checkpointing=spec["grad_checkpointing"])
    accelerator = make_accelerator(LoopSettings.of(cfg), get_profile(cfg.compat))
    rig, dataset = build_e2e(cfg, accelerator)
    batches = list(islice(stage_loader(dataset, cfg, 0, 1), spec["steps"]))
    cuda = accelerator.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = peak_rss_mib()
    timing = rig.epoch(batches, 1)
    out = {"rss_before_training_mib": before, "peak_rss_mib": peak_rss_mib(),
           "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "step_s": timing.figures()["step_s"], "steps": len(batches), "foreign_cpu": timing.foreign_cpu}
    if cuda:
        out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def bench_memory(args: argparse.Namespace, files: tuple[Path, Path, Path]) -> dict:
    results = {}
    for checkpointing in (False, True):
        spec = {"files": [str(p) for p in files], "model": args.memory_model, "frames": args.frames,
                "batch": args.e2e_batch, "steps": args.memory_steps, "grad_checkpointing": checkpointing}
        proc = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(spec)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory subprocess exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        results["on" if checkpointing else "off"] = json.loads(proc.stdout.strip().splitlines()[-1])
        progress(f"memory: grad checkpointing {'on' if checkpointing else 'off'} done")
    off, on = results["off"], results["on"]
    results["ratio_on_over_off"] = on["peak_rss_mib"] / off["peak_rss_mib"]
    growth = {k: results[k]["peak_rss_mib"] - results[k]["rss_before_training_mib"] for k in ("off", "on")}
    results["growth_on_over_off"] = growth["on"] / growth["off"] if growth["off"] > 0 else None
    if "cuda_peak_allocated_mib" in off:
        results["cuda_ratio_on_over_off"] = on["cuda_peak_allocated_mib"] / off["cuda_peak_allocated_mib"]
    return results


# ------------------------------------------------------------------------------------- report


def targets(report: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows; None where a row is for information only."""
    rows: list[tuple[str, str, bool | None]] = []
    cache = report.get("cache")
    if cache:
        for name, f in cache["figures"].items():
            if name != "memory":
                rows.append((f"cache: (b) {name} <= {CACHE_TARGET} x (a) [median (best)]",
                             f"{f['over_memory']:.3f} ({f['best_over_memory']:.3f}) x",
                             f["over_memory"] <= CACHE_TARGET))
    memcache = report.get("memcache")
    if memcache:
        for key, f in memcache["heads"].items():
            rows.append((f"memcache {key}: indexed step <= 1.05 x memory step", f"{f['indexed']['over_memory']:.3f} x",
                         f["indexed"]["over_memory"] <= 1.05))
        rows.append(("memcache: loading peak RSS <= RSS before + cache + 1 GiB",
                     f"{memcache['peak_rss_after_load_mib']:.0f} MiB", memcache['peak_rss_after_load_mib']
                     <= memcache["rss_budget_mib"]))
    for key, result in report.get("e2e", {}).items():
        for name, f in result["figures"].items():
            if name != "memory":
                rows.append((f"e2e {key}: stall {name} <= {STALL_TARGET:.0%}", f"{f['stall']:.1%}",
                             f["stall"] <= STALL_TARGET))
    return rows


def _row(label: str, cells: list[str], width: int = 12) -> str:
    return f"{label:34}" + "".join(f"{c:>{width}}" for c in cells)


STEP_COLUMNS = ("epoch s", "clips/s", "step s", "wait/step", "stall", "stall>1st", "x (a)", "best x (a)",
                "foreign")


def _step_cells(f: dict[str, float]) -> list[str]:
    return [f"{f['epoch_s']:.2f}", f"{f['clips_per_s']:.1f}", f"{f['step_s']:.3f}", f"{f['wait_per_step_ms']:.1f} ms",
            f"{f['stall']:.1%}", f"{f['stall_after_first']:.1%}", f"{f['over_memory']:.3f}",
            f"{f['best_over_memory']:.3f}", f"{f['foreign_cpu']:.0%}"]


def print_cache(cache: dict) -> None:
    print(f"\n1. From a cache: {cache['steps_per_epoch']} steps of {cache['batch']} clips per epoch")
    print(_row("", list(STEP_COLUMNS)))
    for name, f in cache["figures"].items():
        label = "(a) batches in memory" if name == "memory" else f"(b) DataLoader, {name[7:]} workers"
        print(_row(label, _step_cells(f)))
    for name, f in cache["loader_only"].items():
        print(_row(f"    loader alone, {name[7:]} workers", [f"{f['epoch_s']:.2f}", f"{f['clips_per_s']:.0f}"]))
    print(f"  data path of one batch of {cache['batch']} clips (fastest of 5, ms):")
    for key, ms in cache["breakdown"].items():
        print(f"    {key:52}{ms:10.2f}")


def print_e2e(e2e: dict) -> None:
    print("\n2. End to end (stall = time in next(iterator) / step time)")
    print(_row("", list(STEP_COLUMNS)))
    for key, result in e2e.items():
        print(f"  {key}: {result['steps_per_epoch']} steps of {result['batch']} clips")
        for name, f in result["figures"].items():
            label = "    batches in memory" if name == "memory" else f"    DataLoader, {name[7:]} workers"
            print(_row(label, _step_cells(f)))


def print_memory(memory: dict, model: str) -> None:
    print(f"\n3. Peak memory end to end ({model}), one fresh process per setting")
    cuda = "cuda_peak_allocated_mib" in memory["off"]
    print(_row("grad checkpointing", ["RSS before", "peak RSS", "step s", "foreign"]
               + (["CUDA peak"] if cuda else []), 14))
    for name in ("off", "on"):
        m = memory[name]
        cells = [f"{m['rss_before_training_mib']:.0f} MiB", f"{m['peak_rss_mib']:.0f} MiB", f"{m['step_s']:.2f}",
                 f"{m['foreign_cpu']:.0%}"]
        print(_row(f"  {name}", cells + ([f"{m['cuda_peak_allocated_mib']:.0f} MiB"] if cuda else []), 14))
    growth = memory["growth_on_over_off"]
    print(f"  peak RSS on/off {memory['ratio_on_over_off']:.3f}; growth during training (peak - before) on/off "
          + ("-" if growth is None else f"{growth:.3f}"))


def print_report(report: dict, args: argparse.Namespace) -> None:
    print(f"\ndevice {report['machine']['device']}, {report['machine']['cpus']} CPUs, median of {args.repeats}")
    if "cache" in report:
        print_cache(report["cache"])
    if "e2e" in report:
        print_e2e(report["e2e"])
    if "memory" in report:
        print_memory(report["memory"], args.memory_model)
    print("\nforeign CPU (other processes' share of the machine): "
          + ", ".join(f"{k} {v:.1%}" for k, v in report["foreign_cpu"].items()))
    print()
    for target, measured, met in targets(report):
        print(f"{target:64} {measured:>16}  {'MET' if met else 'MISSED'}")


def machine(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {"device": str(device), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "python": platform.python_version(), "torch": torch.__version__,
                               "platform": platform.platform(), "load_average_end": os.getloadavg()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ------------------------------------------------------------------------------------- driver


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="cache,e2e,memory,memcache", help="which of cache,e2e,memory,memcache to run [all]")
    p.add_argument("--memcache-videos", type=int, default=240_000, help="rows of the memcache part's cache [240000]")
    p.add_argument("--memcache-steps", type=int, default=3, help="steps timed per feeding in memcache [3]")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each timing (median) [3]")
    p.add_argument("--frames", type=int, default=8, help="T frames per clip [8]")
    p.add_argument("--cache-videos", type=int, default=4096, help="videos in the synthetic cache [4096]")
    p.add_argument("--cache-batch", type=int, default=256, help="global batch from the cache [256]")
    p.add_argument("--cache-workers", type=_ints, default=[0, 1, 2], help="worker counts of (b) [0,1,2]")
    p.add_argument("--dim", type=int, default=512, help="embedding size D [512, ViT-B-32's]")
    p.add_argument("--classes", type=int, default=400, help="classes of the synthetic cache [400]")
    p.add_argument("--tokens", type=int, default=8, help="M, VCS query tokens per class at most [8]")
    p.add_argument("--e2e-models", type=lambda s: s.split(","), default=["bike-tiny", "ViT-B-32"])
    p.add_argument("--e2e-data", default="generated,real", help="generated and/or real (skipped if absent)")
    p.add_argument("--e2e-videos", type=int, default=48, help="training videos end to end [48]")
    p.add_argument("--e2e-video-frames", type=int, default=32, help="frames of each generated video [32]")
    p.add_argument("--e2e-size", default="256x340", help="HxW of the generated videos [256x340]")
    p.add_argument("--e2e-batch", type=int, default=8, help="clips per step end to end [8]")
    p.add_argument("--e2e-workers", type=int, default=2, help="DataLoader workers end to end [2]")
    p.add_argument("--memory-model", default="ViT-B-32")
    p.add_argument("--memory-steps", type=int, default=2, help="training steps per memory process [2]")
    p.add_argument("--clips", type=Path, default=CLIPS_DIR, help=f"real clips folder [{CLIPS_DIR}]")
    p.add_argument("--out-json", type=Path, help="write every repeat and figure here")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def e2e_data(args: argparse.Namespace, tmp: Path) -> dict[str, tuple[Path, Path, Path]]:
    data = {}
    wanted = args.e2e_data.split(",")
    if "generated" in wanted:
        data["generated"] = synthetic_videos(args, tmp)
    if "real" in wanted:
        real = real_videos(args, tmp)
        if real is None:
            progress(f"e2e: no real clips in {args.clips}; skipped")
        else:
            data["real"] = real
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    parts = set(args.parts.split(","))
    accelerator = make_accelerator(LoopSettings.of(TrainVideoConfig()), get_profile("bike"))
    report: dict = {"args": {k: str(v) for k, v in vars(args).items() if k != "memory_child"},
                    "load_average_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bike-bench-train-") as tmp:
        tmp = Path(tmp)
        foreign = report["foreign_cpu"] = {}
        data = e2e_data(args, tmp) if parts & {"e2e", "memory"} else {}
        if "memory" in parts:  # first, while this process is small (see peak_rss_mib)
            watch = ForeignCpu()
            report["memory"] = bench_memory(args, data["generated"] if "generated" in data else synthetic_videos(args, tmp))
            foreign["memory"] = watch.share()
        if "cache" in parts:
            watch = ForeignCpu()
            report["cache"] = bench_cache(args, tmp, accelerator)
            foreign["cache"] = watch.share()
        if "memcache" in parts:
            from train_memcache import run as run_memcache  # benchmarks/train_memcache.py, beside this file

            report["memcache"] = run_memcache(args.memcache_videos, args.memcache_steps, args.repeats, args.frames,
                                              args.dim, args.classes, args.cache_batch, args.tokens)
        if "e2e" in parts and data:
            watch = ForeignCpu()
            report["e2e"] = bench_e2e(args, data, accelerator)
            foreign["e2e"] = watch.share()
    report["machine"] = machine(accelerator.device)
    print_report(report, args)
    if args.out_json:
        report["targets"] = targets(report)
        args.out_json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
