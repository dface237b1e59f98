"""Benchmark of `bike extract-features` against its parts and against a naive loop.

For each model, on the same list of real clips (the readable clips of ../shared/data/clips repeated
to --videos entries), side by side in one run:

  (a) decode only   MultiViewClips through a DataLoader built as the stage builds it (same workers,
                    batch size, collate_items, worker init), no model;
  (b) model only    FrameEncoder on the batches of (a), already in memory (after one untimed batch);
  (c) stage         run_extraction in this process; also `bike extract-features` as a subprocess
                    (interpreter start and imports included), whose process tree's peak RSS is
                    sampled every ~50 ms, with N and with --memory-factor x N videos;
  (d) naive         one video at a time: decord `vr[i]` per needed frame, open_clip's PIL
                    preprocess per frame, encode_image per video.

Each timing is repeated --repeats times (interleaved) and the median is reported, with the CPU
seconds spent (this process and its reaped children: DataLoader workers, the CLI subprocess), which a
busy shared machine disturbs much less than wall time. Ratios are taken within each repeat. On a
CUDA machine the extraction frames/s are compared with the model-only frames/s.

    .venv/bin/python benchmarks/extract.py --videos 49 --models bike-tiny,ViT-B-32 --out-json bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import decord
import open_clip
import psutil
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bike_cli.config.stages import DEFAULT_DECODER, ExtractConfig
from bike_cli.data.clip_dataset import ClipBatch, MultiViewClips, collate_items, merge_batches
from bike_cli.data.sampling import parse_views, segment_indices
from bike_cli.data.video_lists import read_video_list
from bike_cli.engine.frame_encoder import FrameEncoder, worker_init
from bike_cli.models.clip import ClipSpec, load_clip
from bike_cli.stages.extract import run_extraction

CLIPS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
READABLE_CLIPS = (  # the clips with a video stream (nasa_audio_only.mp3 has none)
    "arm_wrestling.mp4", "arm_wrestling_vp9.webm", "cleaning_pool.mp4", "apply_eye_makeup.avi",
    "basketball.mp4", "flipping_pancake.mkv", "rotated90_3frames.mov",
)
SAMPLE_S = 0.05  # RSS sampling period of the CLI subprocess tree


@dataclass
class Workload:
    """The repeated clip list and the settings every measurement shares."""

    root: Path  # folder of the clip_000.ext links
    list_path: Path  # `relpath label` lines, --videos of them
    big_list_path: Path  # the same with memory_factor x --videos lines
    work: Path  # scratch folder for caches
    frames: int
    views: str
    workers: int
    batch_size: int
    device: torch.device

    @property
    def num_views(self) -> int:
        return parse_views(self.views).num_views


class Stopwatch:
    """Wall and CPU seconds of a `with` block; CPU counts this process's threads and the children
    it reaped meanwhile (DataLoader workers are joined, a subprocess is waited for)."""

    def __init__(self, own_cpu: bool = True) -> None:
        self.own_cpu = own_cpu
        self.wall = self.cpu = 0.0

    def _cpu(self) -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = children.ru_utime + children.ru_stime
        if self.own_cpu:
            own = resource.getrusage(resource.RUSAGE_SELF)
            total += own.ru_utime + own.ru_stime
        return total

    def __enter__(self) -> Stopwatch:
        self._wall0, self._cpu0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall0, self._cpu() - self._cpu0


@dataclass
class ModelResult:
    """Wall and CPU seconds of each repeat, per measurement, and the CLI's peak memory."""

    model: str
    videos: int
    frames_per_video: int
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    peak_rss_mib: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, watch: Stopwatch) -> None:
        self.times.setdefault(key, []).append(watch.wall)
        self.cpu.setdefault(key, []).append(watch.cpu)

    def peak(self, key: str) -> float:
        return statistics.median(self.peak_rss_mib[key])


# ------------------------------------------------------------------------------------ workload


def build_workload(args: argparse.Namespace, clips_dir: Path, tmp: Path, device: torch.device) -> Workload:
    """Links clip_000.ext ... to the readable clips in turn, and the N and factor x N lists."""
    sources = [clips_dir / name for name in READABLE_CLIPS if (clips_dir / name).is_file()]
    root = tmp / "clips"
    root.mkdir()
    total = args.videos * args.memory_factor
    lines = []
    for i in range(total):
        source = sources[i % len(sources)]
        link = root / f"clip_{i:03d}{source.suffix}"
        link.symlink_to(source)
        lines.append(f"{link.name} {i % len(sources)}\n")
    list_path, big_list_path = tmp / "list.txt", tmp / "list_big.txt"
    list_path.write_text("".join(lines[: args.videos]))
    big_list_path.write_text("".join(lines))
    work = tmp / "work"
    work.mkdir()
    return Workload(root, list_path, big_list_path, work, args.frames, args.views, args.workers,
                    args.batch_size, device)


def stage_config(w: Workload, model: str, list_path: Path, out: Path) -> ExtractConfig:
    return ExtractConfig(list_path=list_path, out=out, model=model, pretrained="none", root=w.root,
                         frames=w.frames, views=w.views, batch_size=w.batch_size, workers=w.workers,
                         overwrite=True, device=str(w.device))


# ------------------------------------------------------------------------------- measurements


def time_decode(w: Workload, image_size: int) -> tuple[Stopwatch, list[ClipBatch]]:
    """(a): the stage's decoding path, DataLoader start-up included; returns the batches too."""
    entries = read_video_list(w.list_path, root=w.root).entries
    dataset = MultiViewClips(list(enumerate(entries)), frames=w.frames, layout=parse_views(w.views),
                             size=image_size, mode="test", seed=0, decoder=DEFAULT_DECODER)  # the stage's
    with Stopwatch() as watch:
        loader = DataLoader(  # as in bike_cli.engine.frame_encoder.extract_share: one video per item
            dataset, batch_size=1, shuffle=False, num_workers=w.workers,
            collate_fn=collate_items, worker_init_fn=worker_init, pin_memory=w.device.type == "cuda",
            prefetch_factor=max(2, math.ceil(w.batch_size / w.workers)) if w.workers > 0 else None,
            persistent_workers=False,
        )
        items = list(loader)
        batches = [merge_batches(items[i : i + w.batch_size]) for i in range(0, len(items), w.batch_size)]
    return watch, batches


def time_model(encoder: FrameEncoder, batches: list[ClipBatch]) -> Stopwatch:
    """(b): FrameEncoder alone on decoded batches [B, V, T, 3, S, S] held in memory."""
    frames = [b.frames for b in batches if b.frames is not None]
    encoder(frames[0][:1])  # untimed warm-up (lazy init, CUDA kernels)
    sync(encoder.device)
    with Stopwatch() as watch:
        for batch in frames:
            encoder(batch)  # returns on the CPU, so each call waits for the device
        sync(encoder.device)
    return watch


def time_stage(w: Workload, model: str) -> Stopwatch:
    """(c): the stage itself, in this process, from a fresh cache."""
    with Stopwatch() as watch:
        summary = run_extraction(stage_config(w, model, w.list_path, w.work / "stage.h5"))
    if summary.failed:
        raise RuntimeError(f"the stage failed on {summary.failed} videos: {summary.failures[:3]}")
    return watch


def bike_command() -> list[str]:
    """The `bike` console script beside this interpreter, else `python -m bike_cli`."""
    script = Path(sys.executable).with_name("bike")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "bike_cli"]


def time_cli(w: Workload, model: str, list_path: Path) -> tuple[Stopwatch, float]:
    """(c, subprocess): `bike extract-features` wall time and the peak RSS (MiB) of its process tree."""
    out = w.work / f"cli_{list_path.stem}.h5"
    cmd = bike_command() + [
        "-q", "extract-features", "--list", str(list_path), "--root", str(w.root), "--out", str(out),
        "--model", model, "--pretrained", "none", "--frames", str(w.frames), "--views", w.views,
        "--workers", str(w.workers), "--batch-size", str(w.batch_size), "--device", str(w.device),
        "--overwrite",
    ]
    log = w.work / "cli.log"
    with open(log, "w") as err, Stopwatch(own_cpu=False) as watch:  # not the sampling loop's CPU
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        peak = sample_peak_rss(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read_text()[-2000:]}")
    return watch, peak / 2**20


def sample_peak_rss(proc: subprocess.Popen) -> int:
    """Peak of the summed RSS of `proc` and all its descendants, sampled until it exits (bytes)."""
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        total = 0
        try:
            members = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        time.sleep(SAMPLE_S)
    proc.wait()
    return peak


def naive_frames(path: Path, frames: int, clips: int) -> list[Image.Image]:
    """decord, one `vr[i]` per needed frame (test-mode TSN indices), as PIL images."""
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    indices = segment_indices(len(reader), frames, clips=clips).ravel()
    return [Image.fromarray(reader[int(i)].asnumpy()) for i in indices]


@torch.inference_mode()
def time_naive(w: Workload, model: torch.nn.Module, spec: ClipSpec) -> Stopwatch:
    """(d): a video at a time, frame by frame, PIL preprocess per frame, encode_image per video."""
    preprocess = open_clip.image_transform(spec.image_size, is_train=False, mean=spec.mean, std=spec.std)
    model = model.to(w.device).eval()
    clips = parse_views(w.views).clips
    entries = read_video_list(w.list_path, root=w.root).entries
    with Stopwatch() as watch:
        for entry in entries:
            images = naive_frames(entry.path, w.frames, clips)
            pixels = torch.stack([preprocess(image) for image in images])  # [C*T, 3, S, S]
            model.encode_image(pixels.to(w.device)).cpu()  # [C*T, D]
    return watch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------ driver


def bench_model(w: Workload, model_name: str, repeats: int, videos: int, factor: int) -> ModelResult:
    """All measurements for one model, each repeat running (a) (b) (c) (c-cli) (d) in turn."""
    result = ModelResult(model_name, videos, w.frames * w.num_views)
    with Stopwatch() as watch:
        model, spec = load_clip(model_name, "none")
    result.add("load", watch)
    encoder = FrameEncoder(model, spec, w.device, "auto")
    naive = parse_views(w.views).crops == 1  # the naive loop takes the centre crop only
    for r in range(repeats):
        watch, batches = time_decode(w, spec.image_size)
        result.add("decode", watch)
        result.add("model", time_model(encoder, batches))
        del batches
        result.add("stage", time_stage(w, model_name))
        watch, peak = time_cli(w, model_name, w.list_path)
        result.add("cli", watch)
        result.peak_rss_mib.setdefault("cli", []).append(peak)
        if naive:
            result.add("naive", time_naive(w, model, spec))
        progress(f"{model_name}: repeat {r + 1}/{repeats} done")
    watch, peak = time_cli(w, model_name, w.big_list_path)
    result.add(f"cli_x{factor}", watch)
    result.peak_rss_mib[f"cli_x{factor}"] = [peak]
    return result


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


MEASURES = (  # (key in ModelResult.times, label)
    ("load", "model load (load_clip)"), ("decode", "(a) decode only"), ("model", "(b) model only"),
    ("stage", "(c) stage, in-process"), ("cli", "(c) bike CLI subprocess"), ("naive", "(d) naive loop"),
)
FPS_MEASURES = ("decode", "model", "stage", "cli", "naive")  # the ones on the N-video list


def ratios(r: ModelResult) -> dict[str, list[float]]:
    """Per-repeat ratios: each from timings taken side by side, so that slow drifts of a shared
    machine's load cancel out better than in ratios of medians."""
    a, b, c = r.times["decode"], r.times["model"], r.times["stage"]
    cpu_a, cpu_b, cpu_c = r.cpu["decode"], r.cpu["model"], r.cpu["stage"]
    out = {"stage_over_a_plus_b": [ci / (ai + bi) for ai, bi, ci in zip(a, b, c)],
           "stage_cpu_over_a_plus_b_cpu": [ci / (ai + bi) for ai, bi, ci in zip(cpu_a, cpu_b, cpu_c)],
           "stage_fps_over_model_fps": [bi / ci for bi, ci in zip(b, c)]}
    if "naive" in r.times:
        out["naive_over_stage"] = [di / ci for di, ci in zip(r.times["naive"], c)]
        out["naive_cpu_over_stage_cpu"] = [di / ci for di, ci in zip(r.cpu["naive"], cpu_c)]
    return out


RATIOS = (  # (key in ratios(), label, format)
    ("stage_over_a_plus_b", "(c) / (a + b), wall", "{:.3f}"),
    ("stage_cpu_over_a_plus_b_cpu", "(c) / (a + b), CPU", "{:.3f}"),
    ("naive_over_stage", "(d) / (c), wall", "{:.2f}"),
    ("naive_cpu_over_stage_cpu", "(d) / (c), CPU", "{:.2f}"),
    ("stage_fps_over_model_fps", "(c) frames/s / (b) frames/s", "{:.0%}"),
)


def spread(values: list[float], fmt: str) -> str:
    """`median [min-max]` of per-repeat values."""
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def figures(r: ModelResult, factor: int) -> dict[str, float]:
    """Medians over repeats of the timings and ratios, frames/s, and the memory check."""
    frames = r.videos * r.frames_per_video
    out = {f"{key}_s": statistics.median(t) for key, t in r.times.items()}
    out.update({f"{key}_cpu_s": statistics.median(t) for key, t in r.cpu.items()})
    out.update({key: statistics.median(v) for key, v in ratios(r).items()})
    out.update({f"{key}_fps": frames / out[f"{key}_s"] for key in FPS_MEASURES if key in r.times})
    out.update(peak_rss_n_mib=r.peak("cli"), peak_rss_kn_mib=r.peak(f"cli_x{factor}"),
               peak_rss_ratio=r.peak(f"cli_x{factor}") / r.peak("cli"))
    return out


def targets(name: str, r: ModelResult, device: torch.device, factor: int) -> list[tuple[str, str, bool]]:
    """(target, measured as median [min-max over repeats], met on the median). On a GPU the
    frames/s target replaces the 1.15 x (a + b) one."""
    per_repeat, rows = ratios(r), []

    def row(text: str, key: str, fmt: str, met: Callable[[float], bool]) -> None:
        rows.append((text, spread(per_repeat[key], fmt), met(statistics.median(per_repeat[key]))))

    if device.type == "cuda":
        row("(c) frames/s >= 80% of (b) frames/s", "stage_fps_over_model_fps", "{:.0%}", lambda v: v >= 0.8)
    else:
        row("(c) <= 1.15 x (a + b)", "stage_over_a_plus_b", "{:.3f}", lambda v: v <= 1.15)
    if name == "bike-tiny" and "naive_over_stage" in per_repeat:
        row("(c) >= 2x faster than (d)", "naive_over_stage", "{:.2f}", lambda v: v >= 2.0)
    ratio = r.peak(f"cli_x{factor}") / r.peak("cli")
    rows.append((f"peak RSS flat ({factor}N vs N within 10%)", f"{ratio:.3f}", abs(ratio - 1) <= 0.10))
    return rows


def print_report(results: dict[str, ModelResult], args: argparse.Namespace, device: torch.device) -> None:
    """Seconds per measurement (median, min, max over repeats), memory, then the targets."""
    k = args.memory_factor
    frames = args.videos * args.frames * parse_views(args.views).num_views
    print(f"\n{args.videos} videos x {args.frames} frames x {args.views} views = {frames} frames; workers "
          f"{args.workers}, batch {args.batch_size}, device {device}, {args.repeats} repeats\n")
    print(f"{'model':10} {'measurement':28} {'median s':>9} {'min s':>8} {'max s':>8} {'frames/s':>9} "
          f"{'CPU s':>8}")
    for name, r in results.items():
        for key, label in MEASURES + ((f"cli_x{k}", f"(c) bike CLI, {k}N videos"),):
            if key in r.times:
                t, median = r.times[key], statistics.median(r.times[key])
                fps = f"{frames / median:9.1f}" if key in FPS_MEASURES else ""
                print(f"{name:10} {label:28} {median:9.2f} {min(t):8.2f} {max(t):8.2f} {fps:>9} "
                      f"{statistics.median(r.cpu[key]):8.2f}")
    print(f"\n{'model':10} {'ratio, per repeat':28} {'median [min-max]':>24}")
    for name, r in results.items():
        per_repeat = ratios(r)
        for key, label, fmt in RATIOS:
            if key in per_repeat:
                print(f"{name:10} {label:28} {spread(per_repeat[key], fmt):>24}")
    print(f"\n{'model':10} {'peak RSS of the CLI process tree':40} {'N':>8} {str(k) + 'N':>8}")
    for name, r in results.items():
        n, kn = r.peak("cli"), r.peak(f"cli_x{k}")
        print(f"{name:10} {'MiB, summed over main + workers':40} {n:8.0f} {kn:8.0f}")
    print("\ntargets (per-repeat ratios: median [min-max]; judged on the median)")
    for name, r in results.items():
        for target, measured, met in targets(name, r, device, k):
            print(f"{name:10} {target:40} {measured:>20}  {'MET' if met else 'MISSED'}")


def json_report(results: dict[str, ModelResult], args: argparse.Namespace, device: torch.device,
                load_start: tuple[float, float, float]) -> dict:
    """Every repeat, the median and best figures, and the targets, for --out-json."""
    k, models = args.memory_factor, {}
    for name, r in results.items():
        models[name] = {"times_s": r.times, "cpu_s": r.cpu, "peak_rss_mib": r.peak_rss_mib,
                        "ratios": ratios(r), "median": figures(r, k), "targets": targets(name, r, device, k)}
    return {"args": {key: str(v) for key, v in vars(args).items()}, "machine": machine(),
            "load_average_start": load_start, "models": models}


def machine() -> dict[str, object]:
    info: dict[str, object] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "python": platform.python_version(), "torch": torch.__version__,
                               "platform": platform.platform(), "load_average_end": os.getloadavg()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=49, help="list entries (N) [49]")
    p.add_argument("--models", default="bike-tiny,ViT-B-32", help="comma-separated, random init")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers [2, the stage's default]")
    p.add_argument("--batch-size", type=int, default=16, help="videos per batch [16, the stage's default]")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--views", default="1x1")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each timing (median) [3]")
    p.add_argument("--memory-factor", type=int, default=4, help="the memory check runs N and this x N videos")
    p.add_argument("--device", default="auto", help="auto: cuda if available, else cpu")
    p.add_argument("--clips", type=Path, default=CLIPS_DIR, help=f"real clips folder [{CLIPS_DIR}]")
    p.add_argument("--out-json", type=Path, help="write every repeat and figure here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not any((args.clips / name).is_file() for name in READABLE_CLIPS):
        print(f"skipped: no real clips in {args.clips}", file=sys.stderr)
        return 0
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    results: dict[str, ModelResult] = {}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bike-bench-") as tmp:
        w = build_workload(args, args.clips, Path(tmp), device)
        for name in args.models.split(","):
            results[name] = bench_model(w, name, args.repeats, args.videos, args.memory_factor)
    print_report(results, args, device)
    if args.out_json:
        args.out_json.write_text(json.dumps(json_report(results, args, device, load_start), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
