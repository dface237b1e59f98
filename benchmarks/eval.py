"""Benchmark of `bike eval` from a multi-view feature cache: cache read, scoring, metrics, score CSV.

Issue target: scoring and metrics for 20,000 videos x 12 views (4x3) x 400 classes in under 10 s on
this machine's CPUs. A synthetic cache is written with h5py in the documented layout
(bike_cli.io.feature_cache; random fp16 [N, V, T, D] embeddings, random labels) and the Video branch
is built directly: `VideoHead(D, head, temporal, layers=6, heads=8)` with a logit scale of 100 and
random class texts (pooled [K, D], tokens [K, M, D], a mask of 1..M real tokens per class).

For each head configuration, eval's own cache loop (bike_cli.engine.evaluation.cache_scores: CachedClips
-> contiguous slab reads (`SlabBatches`) -> `VideoBranch.class_probabilities`, views averaged) runs with
`class_probabilities` wrapped in a timer: model time is the time inside it, cache read is the rest of the loop.

The floor: each configuration's FLOP (torch's FlopCounterMode on `class_probabilities`) for all videos,
divided by the machine's fp32 matmul rate, measured in the same run: one 1024^3 product after every
`--rate-every`-th batch of the scoring loop (outside the timer; interleaved, so the floor sees the
same load from other processes as the scorer), median and best of those samples. `floor_s` is at
the median rate, `ratio` = model seconds / floor_s (`ratio_best_rate` at the best sample); also
`matmul_limit_s`, at the best of 5 products measured after scoring. The same in CPU seconds of this
process (`model_cpu_full_s`, `cpu_floor_s`, `cpu_ratio`; with --threads 1 the same as wall seconds on
an idle machine): on a machine shared with other work it shows what time-slicing hides. Each
configuration's figure, floor and ratio are also printed on stderr at the end. The configurations
of `--subset-configs` (the slow VCS + transformer) run on the first `--subset` videos and are
extrapolated linearly to all videos (marked `extrapolated`); the others score every video.
Metrics (`run_protocol('full')`) and `write_score_csv` run on the full [N, K] probabilities,
`--repeats` times (median).
Also: the head's parts on one batch in memory (temporal transformer vs scoring head, fp32 vs bf16
autocast), and the whole `bike eval` CLI on a small bike-tiny cache with a vcs+transformer checkpoint.

    .venv/bin/python benchmarks/eval.py --threads 1 --cli-videos 0 --out-json eval.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from bike_cli.config.stages import EvalConfig
from bike_cli.engine.evaluation import cache_scores
from bike_cli.eval.protocols import run_protocol
from bike_cli.io.checkpoints import VIDEO_KIND, BranchCheckpoint, save_checkpoint
from bike_cli.io.feature_cache import CacheMeta, FeatureCache
from bike_cli.io.score_csv import ScoreTable, write_score_csv
from bike_cli.models.authors import scaled_view_scores
from bike_cli.models.factory import VideoClassifier
from bike_cli.models.heads import VideoHead
from bike_cli.models.loss import LogitScale
from bike_cli.models.text import ClassTexts
from bike_cli.models.video_branch import VideoBranch
from bike_cli.progress import Progress

CONFIGS = (("vcs", "transformer"), ("vcs", "none"), ("mean", "none"))
TARGET_S = 10.0
_STR = h5py.string_dtype("utf-8")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_cache(path: Path, videos: int, clips: int, crops: int, frames: int, dim: int, classes: int,
                model: str = "ViT-B-32", seed: int = 0, block: int = 500) -> Path:
    """Random fp16 embeddings [videos, clips*crops, frames, dim] in the cache layout (chunks (1, V, T, D))."""
    rng = np.random.default_rng(seed)
    views = clips * crops
    import open_clip

    import bike_cli.models.clip  # noqa: F401  (registers bike's own configs, e.g. bike-tiny)

    image_size = open_clip.get_model_config(model)["vision_cfg"]["image_size"]  # as the model's own cache records
    meta = CacheMeta(model_name=model, pretrained="none", checkpoint_sha256=None, quick_gelu=False,
                     image_size=image_size, embed_dim=dim, frames=frames, clips=clips, crops=crops, sampling_mode="test",
                     seed=seed, decoder="decord", multilabel=False, num_classes=classes,
                     class_names=tuple(f"action {k}" for k in range(classes)))
    with h5py.File(path, "w") as h5:
        emb = h5.create_dataset("embeddings", shape=(videos, views, frames, dim), dtype=np.float16,
                                chunks=(1, views, frames, dim))
        for start in range(0, videos, block):
            n = min(block, videos - start)
            emb[start:start + n] = rng.standard_normal((n, views, frames, dim), dtype=np.float32).astype(np.float16)
        h5.create_dataset("video_ids", data=np.array([f"v{i:06d}" for i in range(videos)], dtype=object), dtype=_STR)
        h5.create_dataset("labels", data=rng.integers(0, classes, videos).astype(np.int64))
        h5.create_dataset("num_frames", data=np.full(videos, 300, dtype=np.int64))
        h5.create_dataset("decoders", data=np.array(["decord"] * videos, dtype=object), dtype=_STR)
        h5.attrs.update(meta.to_attrs())
    return path


def random_class_texts(classes: int, tokens: int, dim: int, seed: int = 0) -> ClassTexts:
    """pooled [K, D], tokens [K, M, D] and a mask of 1..M real tokens per class, all random."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(tokens) < torch.randint(1, tokens + 1, (classes, 1), generator=g)  # [K, M]
    token_emb = torch.randn(classes, tokens, dim, generator=g) * mask.unsqueeze(-1)
    return ClassTexts(torch.randn(classes, dim, generator=g), token_emb, mask)


def make_branch(dim: int, head: str, temporal: str, heads: int, layers: int = 6) -> VideoBranch:
    torch.manual_seed(0)
    video_head = VideoHead(dim, head=head, temporal=temporal, layers=layers, heads=heads)
    return VideoBranch(video_head, LogitScale(math.log(100.0))).eval()


RATE_N = 1024  # the matmul rate: n x n fp32 products


def one_matmul_gflops(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """GFLOP/s of one a @ b (n x n): per wall second and per CPU second of this process."""
    started, cpu = time.perf_counter(), time.process_time()
    a @ b
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return 2 * a.shape[0] ** 3 / wall / 1e9, 2 * a.shape[0] ** 3 / max(cpu, 1e-9) / 1e9


class TimedModel:
    """Wraps `class_probabilities`, adding up the seconds spent inside it; after every `rate_every`-th
    call, outside that time, one 1024^3 matmul samples the machine's fp32 matmul rate (0: never)."""

    def __init__(self, branch: VideoBranch, rate_every: int = 0) -> None:
        self.seconds, self.cpu_seconds, self.clips, self.calls = 0.0, 0.0, 0, 0
        self._inner = branch.class_probabilities
        self.rate_every, self.rates, self.cpu_rates, self.rate_seconds = rate_every, [], [], 0.0
        self._a, self._b = torch.randn(RATE_N, RATE_N), torch.randn(RATE_N, RATE_N)
        one_matmul_gflops(self._a, self._b)  # warm-up
        branch.class_probabilities = self  # instance attribute: the stage calls this

    def __call__(self, frames: torch.Tensor, classes: ClassTexts, rule=scaled_view_scores) -> torch.Tensor:
        started, cpu = time.perf_counter(), time.process_time()
        out = self._inner(frames, classes, rule)
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu
        self.clips += frames.shape[0] * frames.shape[1]
        self.calls += 1
        if self.rate_every and self.calls % self.rate_every == 0:
            started = time.perf_counter()
            wall_rate, cpu_rate = one_matmul_gflops(self._a, self._b)
            self.rates.append(wall_rate)
            self.cpu_rates.append(cpu_rate)
            self.rate_seconds += time.perf_counter() - started
        return out


def score_config(cache: FeatureCache, texts: ClassTexts, args: argparse.Namespace, head: str, temporal: str,
                 videos: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Eval's `cache_scores` on the first `videos` rows: read and model seconds, probabilities."""
    branch = make_branch(args.dim, head, temporal, args.heads)
    timer = TimedModel(branch, args.rate_every)
    vm = VideoClassifier(branch, texts, list(cache.meta.class_names), None, None, None, args.frames, {}, {})
    view = _Subset(cache, videos)
    started = time.perf_counter()
    _, labels, probs, _ = cache_scores(vm, scaled_view_scores, view, args.batch_size, torch.device("cpu"), Progress())
    wall = time.perf_counter() - started - timer.rate_seconds  # the rate samples are no part of eval
    scale = len(cache) / videos
    figures = {"matmul_rates_gflops": timer.rates, "matmul_cpu_rates_gflops": timer.cpu_rates,
               "model_cpu_s": timer.cpu_seconds, "model_cpu_full_s": timer.cpu_seconds * len(cache) / videos,
               "videos_scored": videos, "clips": timer.clips, "wall_s": wall, "model_s": timer.seconds,
               "read_s": wall - timer.seconds, "clips_per_s": timer.clips / wall,
               "model_clips_per_s": timer.clips / timer.seconds, "extrapolated": videos < len(cache),
               "read_full_s": (wall - timer.seconds) * scale, "model_full_s": timer.seconds * scale}
    return figures, labels, probs


class _Subset(FeatureCache):
    """The first `n` rows of a cache, seen as a cache (what `cache_scores` reads)."""

    def __init__(self, cache: FeatureCache, n: int) -> None:  # super().__init__ not called: shares state
        self.__dict__.update(cache.__getstate__())
        self.video_ids, self.labels = cache.video_ids[:n], cache.labels[:n]


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_outputs(tmp: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str],
                  repeats: int) -> dict:
    """Median seconds of the full protocol's metrics and of writing the score CSV, as `run_eval` does."""
    path = tmp / "video_scores.csv"
    table = ScoreTable(ids, labels, probs.astype(np.float32), names, path)
    metrics = median_seconds(lambda: run_protocol("full", table), repeats)
    csv = median_seconds(lambda: write_score_csv(path, ids, labels, probs, names), repeats)
    old = median_seconds(lambda: percent_format_csv(tmp / "old_scores.csv", ids, labels, probs, names), repeats)
    return {"metrics_s": metrics, "csv_s": csv, "csv_mib": path.stat().st_size / 2**20,
            "csv_percent_format_s": old, "csv_over_percent_format": csv / old,
            "top1": run_protocol("full", table)["top1"]}


def percent_format_csv(path: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray, names: list[str]) -> None:
    """The score-CSV writer before pyarrow, side by side: Python `%.7g` for every score."""
    row_format = ",".join(["%.7g"] * probs.shape[1])
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join(["video_id", "label", *names]) + "\n")
        for vid, label, row in zip(ids, labels.tolist(), probs.astype(np.float64).tolist()):
            fh.write(f"{vid},{label},{row_format % tuple(row)}\n")


def head_parts(texts: ClassTexts, args: argparse.Namespace) -> dict:
    """Milliseconds per batch (batch_size x views clips, in memory) of the temporal transformer and of
    each scoring head, in fp32 and under CPU bf16 autocast."""
    clips = args.batch_size * args.views_count
    frames = torch.randn(clips, args.frames, args.dim)
    branch = make_branch(args.dim, "vcs", "transformer", args.heads)
    out = {"clips_per_batch": clips}
    for precision in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else torch.no_grad
        with torch.no_grad(), ctx():
            encoded = branch.head.encode(frames)
            out[f"transformer_ms_{precision}"] = 1000 * median_seconds(lambda: branch.head.encode(frames), 3)
            for head in ("vcs", "mean"):
                branch.head.head = head
                out[f"{head}_head_ms_{precision}"] = 1000 * median_seconds(
                    lambda: branch.head.score(encoded, texts), 3)
    return out


def bench_cli(tmp: Path, args: argparse.Namespace) -> dict:
    """The whole `bike eval` on a bike-tiny (D=64) cache with a vcs+transformer checkpoint; wall seconds."""
    dim, classes = 64, args.classes
    cache = build_cache(tmp / "tiny.h5", args.cli_videos, args.clips, args.crops, args.frames, dim, classes,
                        model="bike-tiny")
    branch = make_branch(dim, "vcs", "transformer", heads=1)
    config = {"head": "vcs", "temporal": "transformer", "tau": 0.01, "temporal_layers": 6, "vcs_tokens": "words",
              "templates": ["{}"], "frames": args.frames}
    names = [f"action {k}" for k in range(classes)]
    ckpt = save_checkpoint(tmp / "tiny.pt", BranchCheckpoint(
        config, {"model_name": "bike-tiny", "pretrained": "none", "quick_gelu": False}, names, 1, {},
        branch.state_dict()), VIDEO_KIND)
    out = tmp / "cli-out"
    command = [sys.executable, "-m", "bike_cli", "eval", "--checkpoint", str(ckpt), "--features", str(cache),
               "--out", str(out), "--device", "cpu", "--workers", str(args.workers)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - started
    if done.returncode:
        return {"error": done.stderr[-2000:], "returncode": done.returncode}
    document = json.loads((out / "metrics.json").read_text())
    return {"videos": args.cli_videos, "dim": dim, "command": " ".join(command[1:]), "wall_s": wall,
            "stage_seconds": document["seconds"], "top1": document["metrics"]["video"]["top1"]}


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput (GFLOP/s, best of `repeats` n x n products): the physical limit."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    fastest = min(median_seconds(lambda: a @ b, 1) for _ in range(repeats))
    return 2 * n**3 / fastest / 1e9


def flops_per_video(texts: ClassTexts, args: argparse.Namespace, head: str, temporal: str) -> float:
    """FLOP that `class_probabilities` counts (torch's FlopCounterMode) for one video of all its views."""
    from torch.utils.flop_counter import FlopCounterMode

    branch = make_branch(args.dim, head, temporal, args.heads)
    frames = torch.randn(4, args.views_count, args.frames, args.dim)  # [b, V, T, D]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        branch.class_probabilities(frames, texts)
    return counter.get_total_flops() / 4


def floor(figures: dict) -> dict:
    """The matrix-product floor of a configuration's model time from the rates sampled while it ran."""
    rates, cpu_rates = figures.pop("matmul_rates_gflops"), figures.pop("matmul_cpu_rates_gflops")
    if not rates:
        return {}
    median, best, cpu_median = statistics.median(rates), max(rates), statistics.median(cpu_rates)
    floor_s, floor_best_s = figures["gflop_all_videos"] / median, figures["gflop_all_videos"] / best
    cpu_floor_s = figures["gflop_all_videos"] / cpu_median
    return {"matmul_rate_median_gflops": median, "matmul_rate_best_gflops": best,
            "matmul_rate_worst_gflops": min(rates), "rate_samples": len(rates),
            "floor_s": floor_s, "ratio": figures["model_full_s"] / floor_s,
            "floor_best_rate_s": floor_best_s, "ratio_best_rate": figures["model_full_s"] / floor_best_s,
            # per CPU second of this process: robust to other processes taking the cores in turn
            "matmul_cpu_rate_median_gflops": cpu_median, "cpu_floor_s": cpu_floor_s,
            "cpu_ratio": figures["model_cpu_full_s"] / cpu_floor_s}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor(), "load_average_end": os.getloadavg()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=20_000, help="videos in the synthetic cache [20000]")
    p.add_argument("--views", default="4x3", help="CxS views per video [4x3]")
    p.add_argument("--frames", type=int, default=8, help="T frames per clip [8]")
    p.add_argument("--dim", type=int, default=512, help="embedding size D [512, ViT-B-32's]")
    p.add_argument("--classes", type=int, default=400, help="K classes [400]")
    p.add_argument("--tokens", type=int, default=3, help="M, VCS query tokens per class at most [3]")
    p.add_argument("--heads", type=int, default=8, help="attention heads of the temporal transformer [8]")
    p.add_argument("--batch-size", type=int, default=EvalConfig.batch_size, help="videos per batch [stage's 64]")
    p.add_argument("--workers", type=int, default=EvalConfig.workers, help="DataLoader workers of the CLI run [stage's 2]")
    p.add_argument("--subset", type=int, default=1000,
                   help="videos scored by the --subset-configs, extrapolated to --videos [1000]")
    p.add_argument("--subset-configs", default="vcs+transformer",
                   help="head+temporal configurations scored on --subset videos only [vcs+transformer]")
    p.add_argument("--rate-every", type=int, default=1,
                   help="sample the matmul rate after every N-th scoring batch; 0: never [1]")
    p.add_argument("--repeats", type=int, default=3, help="repeats of metrics and CSV timings (median) [3]")
    p.add_argument("--cli-videos", type=int, default=2000, help="videos of the bike-tiny CLI run; 0 skips it [2000]")
    p.add_argument("--configs", default=",".join(f"{h}+{t}" for h, t in CONFIGS),
                   help="head+temporal configurations to score [all]; mean+none (full size) is always run")
    p.add_argument("--threads", type=int, help="torch threads of the main process [torch's default]")
    p.add_argument("--out-json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    args.clips, args.crops = (int(v) for v in args.views.lower().split("x"))
    args.views_count = args.clips * args.crops
    args.configs = [tuple(c.split("+")) for c in {"mean+none", *args.configs.split(",")}]
    args.subset_configs = [tuple(c.split("+")) for c in args.subset_configs.split(",") if c]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bike-eval-bench-") as name:
        tmp = Path(name)
        progress(f"writing a {args.videos} x {args.views_count} x {args.frames} x {args.dim} fp16 cache")
        started = time.perf_counter()
        cache = FeatureCache(build_cache(tmp / "test.h5", args.videos, args.clips, args.crops, args.frames,
                                         args.dim, args.classes))
        report["cache"] = {"build_s": time.perf_counter() - started,
                           "gib": (tmp / "test.h5").stat().st_size / 2**30}
        texts = random_class_texts(args.classes, args.tokens, args.dim)
        names = list(cache.meta.class_names)
        report["configs"] = {}
        for head, temporal in [c for c in reversed(CONFIGS) if c in args.configs]:  # mean first: its full-size scores feed metrics and CSV
            videos = min(args.subset, len(cache)) if (head, temporal) in args.subset_configs else len(cache)
            progress(f"scoring head={head} temporal={temporal} on {videos} videos")
            figures, labels, probs = score_config(cache, texts, args, head, temporal, videos)
            if videos == len(cache) and "outputs" not in report:
                progress("metrics (full protocol) and score CSV")
                report["outputs"] = bench_outputs(tmp, cache.video_ids, labels, probs, names, args.repeats)
            report["configs"][f"{head}+{temporal}"] = figures
        report["matmul_gflops"] = gflops = matmul_gflops()
        for name, figures in report["configs"].items():
            head, temporal = name.split("+")
            figures["gflop_all_videos"] = flops_per_video(texts, args, head, temporal) * args.videos / 1e9
            figures["matmul_limit_s"] = figures["gflop_all_videos"] / gflops  # at the machine's matmul rate
            figures.update(floor(figures))
            if "ratio" in figures:
                progress(f"{name}: model {figures['model_full_s']:.1f} s, floor {figures['floor_s']:.1f} s "
                         f"({figures['gflop_all_videos'] / 1e3:.2f} TFLOP at the median of "
                         f"{figures['rate_samples']} matmul samples, {figures['matmul_rate_median_gflops']:.0f} "
                         f"GFLOP/s): ratio {figures['ratio']:.2f}; CPU seconds {figures['model_cpu_full_s']:.1f} / "
                         f"{figures['cpu_floor_s']:.1f} = {figures['cpu_ratio']:.2f}"
                         f"{' (extrapolated)' if figures['extrapolated'] else ''}")
        for figures in report["configs"].values():
            figures["total_s"] = (figures["read_full_s"] + figures["model_full_s"] + report["outputs"]["metrics_s"]
                                  + report["outputs"]["csv_s"])
            figures["target_met"] = figures["total_s"] < TARGET_S
        progress("head parts on one batch in memory")
        report["head_parts"] = head_parts(texts, args)
        if args.cli_videos:
            progress(f"bike eval CLI on {args.cli_videos} bike-tiny videos")
            report["cli"] = bench_cli(tmp, args)
        cache.close()
    report["machine"]["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.out_json:
        args.out_json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
