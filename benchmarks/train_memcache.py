"""Benchmark of `train-video --features` with the cache in memory (`--cache-in-memory`), in one fresh process.

A synthetic cache of --videos x 1 view x 8 frames x 512 dims (fp16; the default 240,000 is
Kinetics-400's training set, 1.83 GiB) is written in the documented layout, then this process
(started fresh, so that its peak RSS is the stage's) builds the training set as `run_train_video`
does (`train_dataset`, then `MemoryClips`: rows read in contiguous slabs) and records the load time
and peak RSS (VmHWM). For each head (mean, VCS, VCS + temporal transformer; 400 classes, random
class texts, global batch 256) it times the first --steps steps of epoch 1, interleaved, median of
--repeats, fed three ways:

    memory   the same batches, gathered beforehand into a list (no data path at all)
    indexed  `MemoryBatches` over `MemoryClips`: what the stage now does
    loader   the DataLoader over `CachedClips` with 0 workers (the stage before, per-row h5py reads)

Target: indexed step <= 1.05 x memory step; peak RSS <= cache size + 1 GiB.
Run by `benchmarks/train_video.py --parts memcache`, or alone:

    .venv/bin/python benchmarks/train_memcache.py --videos 240000 --out-json memcache.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

from eval import build_cache  # benchmarks/eval.py: random fp16 rows in the documented cache layout

STEP_TARGET = 1.05
HEADS = (("mean", "none"), ("vcs", "none"), ("vcs", "transformer"))


def child(spec: dict) -> dict:
    """In a fresh process: load the cache into memory, then time the three feedings per head."""
    from torch.utils.data import DataLoader
    from train_video import make_rig, median_figures, peak_rss_mib, random_class_texts

    from bike_cli.config.profile import get_profile
    from bike_cli.config.stages import TrainVideoConfig
    from bike_cli.data.cached_clips import MemoryBatches, MemoryClips
    from bike_cli.engine.training_loop import EpochBatches, LoopSettings, make_accelerator
    from bike_cli.io.feature_cache import FeatureCache
    from bike_cli.models.heads import VideoHead
    from bike_cli.models.loss import LogitScale
    from bike_cli.models.video_branch import VideoBranch
    from bike_cli.stages.train_video import train_dataset

    path, dim, steps = Path(spec["cache"]), spec["dim"], spec["steps"]
    cfg = TrainVideoConfig(features=path, frames=spec["frames"], batch_size=spec["batch"], workers=0)
    accelerator = make_accelerator(LoopSettings.of(cfg), get_profile(cfg.compat))
    rss_start = peak_rss_mib()
    started = time.perf_counter()
    source = train_dataset(cfg, FeatureCache(path), [], 0)
    memory = MemoryClips(source, accelerator.device)
    out = {"load_s": time.perf_counter() - started, "rss_before_load_mib": rss_start,
           "peak_rss_after_load_mib": peak_rss_mib(), "cache_gib": MemoryClips.nbytes(source) / 2**30,
           "rows": memory.n}
    sampler = EpochBatches(len(memory), cfg.batch_size, 0, 1, cfg.seed)
    sampler.set_epoch(1)
    memory.set_epoch(1)
    source.set_epoch(1)
    first = list(islice(sampler, steps))
    feeds = {"memory": lambda: [memory.batch(p) for p in first],  # gathered before the timing starts
             "indexed": lambda: MemoryBatches(memory, first),
             "loader": lambda: DataLoader(source, batch_sampler=first, num_workers=0)}
    texts = random_class_texts(spec["classes"], spec["tokens"], dim)
    out["heads"] = {}
    for head_name, temporal in [h for h in HEADS if f"{h[0]}+{h[1]}" in spec["heads"]]:
        head = VideoHead(dim, head=head_name, temporal=temporal, tau=cfg.tau, layers=cfg.temporal_layers,
                         heads=max(1, dim // 64))
        rig = make_rig(cfg, VideoBranch(head, LogitScale(), None), texts, None, len(sampler), accelerator)
        rig.epoch(feeds["memory"]()[:1], 0)  # warm-up, untimed
        runs: dict[str, list] = {name: [] for name in feeds}
        for _ in range(spec["repeats"]):
            for name, feed in feeds.items():
                runs[name].append(rig.epoch(feed(), 1))
        figures = {name: median_figures(r) for name, r in runs.items()}
        for f in figures.values():
            f["over_memory"] = f["step_s"] / figures["memory"]["step_s"]
        out["heads"][f"{head_name}+{temporal}"] = figures
        accelerator.free_memory()
        print(f"[{time.strftime('%H:%M:%S')}] {head_name}+{temporal} done", file=sys.stderr, flush=True)
    out["peak_rss_mib"] = peak_rss_mib()  # training included: the heads' activations and optimiser state
    out["rss_budget_mib"] = rss_start + out["cache_gib"] * 1024 + 1024  # the process before loading, + cache + 1 GiB
    return out


def run(videos: int, steps: int, repeats: int, frames: int = 8, dim: int = 512, classes: int = 400,
        batch: int = 256, tokens: int = 8, heads: tuple[str, ...] = tuple(f"{h}+{t}" for h, t in HEADS)) -> dict:
    """Write the cache, then run `child` in a fresh process; its figures and the targets."""
    with tempfile.TemporaryDirectory(prefix="bike-memcache-") as tmp:
        started = time.perf_counter()
        path = build_cache(Path(tmp) / "cache.h5", videos, 1, 1, frames, dim, classes, block=8192)
        build_s = time.perf_counter() - started
        spec = {"cache": str(path), "frames": frames, "dim": dim, "classes": classes, "batch": batch,
                "tokens": tokens, "steps": steps, "repeats": repeats, "heads": list(heads)}
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                              text=True, check=False, cwd=Path(__file__).parent)
        if proc.returncode:
            raise RuntimeError(f"memcache child exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(videos=videos, build_s=build_s, steps=steps, repeats=repeats)
    out["targets"] = {
        **{f"{k}: indexed step <= {STEP_TARGET} x memory": h["indexed"]["over_memory"] <= STEP_TARGET
           for k, h in out["heads"].items()},
        "loading: peak RSS <= RSS before + cache + 1 GiB": out["peak_rss_after_load_mib"] <= out["rss_budget_mib"],
        "whole run, training included: peak RSS <= RSS before + cache + 1 GiB":
            out["peak_rss_mib"] <= out["rss_budget_mib"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=240_000, help="rows of the synthetic cache [240000]")
    p.add_argument("--steps", type=int, default=3, help="steps of epoch 1 timed per feeding [3]")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median) [3]")
    p.add_argument("--heads", default=",".join(f"{h}+{t}" for h, t in HEADS), help="head+temporal to time [all]")
    p.add_argument("--out-json", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    out = run(args.videos, args.steps, args.repeats, heads=tuple(args.heads.split(",")))
    text = json.dumps(out, indent=2)
    print(text)
    if args.out_json:
        args.out_json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
