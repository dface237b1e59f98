"""Benchmark of `bike search`: index build and query time over large synthetic caches.

Issue target: a query over a 240,000-video cache (T=8, D=512, fp16, one view) within 1.5 s on 2 CPU
cores. A synthetic cache is written with h5py in the documented layout (bike_cli.io.feature_cache:
random fp16 [N, 1, T, D] embeddings in chunks (1, V, T, D), model ViT-B-32 with `none` weights, so
that `bike search` itself can run on it offline). For each size:

- index build: `stages.search.load_index` with no index file (reads every video in slabs, writes
  `CACHE.h5.search-index.h5`);
- index load: the same call in a fresh state with the file present (what each new process pays);
- query, per rule: `stages.search.search` for one query (random pooled embedding, 5 word tokens):
  stage 1 over the index held in memory, stage 2 (vcs) on the --candidates best, median of --repeats;
- opening the cache, side by side: the reads the reader does with plain h5py (attributes, video
  ids, labels: no check) against `FeatureCache(path)` with its helper-process check (cold: the
  helper started; warm: already running, as for a second file), and the verdict kept (a repeat);
- index load, side by side: a plain h5py read of /vectors against `load_index` (fast path: the
  cache's stamp unchanged) and against `load_index` after `touch` (stamp changed: the cache's
  sha256 decides, and the index is re-stamped), with that sha256 alone;
- with --cli, the whole `bike search --features CACHE "a dog" --json -q` process per rule (Python
  start-up, model load and text encoding, index load, query), as a user runs it.

torch runs with the threads it has (2 on this machine), as the command does.

    .venv/bin/python benchmarks/search.py --videos 20000 240000 --cli --out-json search.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from bike_cli.io import untrusted_hdf5
from bike_cli.io.feature_cache import CacheMeta, FeatureCache
from bike_cli.io.identity import file_sha256
from bike_cli.io.search_index import index_path
from bike_cli.models.heads import RULES
from bike_cli.models.text import ClassTexts
from bike_cli.progress import Progress
from bike_cli.stages import search as stage

TARGET_S = 1.5
_STR = h5py.string_dtype("utf-8")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_cache(path: Path, videos: int, frames: int, dim: int, seed: int = 0, block: int = 10000) -> Path:
    """Random fp16 embeddings [videos, 1, frames, dim] in the cache layout (ViT-B-32, 224 px, weights none)."""
    rng = np.random.default_rng(seed)
    meta = CacheMeta(model_name="ViT-B-32", pretrained="none", checkpoint_sha256=None, quick_gelu=False,
                     image_size=224, embed_dim=dim, frames=frames, clips=1, crops=1, sampling_mode="test", seed=seed,
                     decoder="decord", multilabel=False, num_classes=400,
                     class_names=tuple(f"action {k}" for k in range(400)))
    with h5py.File(path, "w") as h5:
        emb = h5.create_dataset("embeddings", shape=(videos, 1, frames, dim), dtype=np.float16,
                                chunks=(1, 1, frames, dim))
        for start in range(0, videos, block):
            n = min(block, videos - start)
            emb[start:start + n] = rng.standard_normal((n, 1, frames, dim), dtype=np.float32).astype(np.float16)
        h5.create_dataset("video_ids", data=np.array([f"v{i:06d}" for i in range(videos)], dtype=object), dtype=_STR)
        h5.create_dataset("labels", data=rng.integers(0, 400, videos).astype(np.int64))
        h5.create_dataset("num_frames", data=np.full(videos, 300, dtype=np.int64))
        h5.create_dataset("decoders", data=np.array(["decord"] * videos, dtype=object), dtype=_STR)
        h5.attrs.update(meta.to_attrs())
    return path


def random_query(dim: int, tokens: int = 5, seed: int = 0) -> ClassTexts:
    g = torch.Generator().manual_seed(seed)
    return ClassTexts(torch.nn.functional.normalize(torch.randn(1, dim, generator=g), dim=-1),
                      torch.randn(1, tokens, dim, generator=g), torch.ones(1, tokens, dtype=torch.bool))


def timed(func, *args):
    tic = time.perf_counter()
    out = func(*args)
    return out, time.perf_counter() - tic


def bench_size(workdir: Path, videos: int, args: argparse.Namespace) -> dict:
    path = workdir / f"search_{videos}.h5"
    if not path.exists():
        progress(f"writing a synthetic cache of {videos} videos -> {path}")
        build_cache(path, videos, args.frames, args.dim)
    index_path(path).unlink(missing_ok=True)
    stage._MEMO.clear()
    cache = FeatureCache(path)
    progress(f"{videos}: building the index")
    (vectors, info), build_s = timed(stage.load_index, cache, Progress())
    assert info["built"]
    stage._MEMO.clear()
    (vectors, info), load_s = timed(stage.load_index, FeatureCache(path), Progress())
    assert not info["built"]
    row = {"videos": videos, "cache_gb": path.stat().st_size / 1e9, "index_build_s": build_s, "index_load_s": load_s}
    row.update(bench_open(path, args.repeats))
    query = random_query(args.dim)
    for rule in RULES:
        times = [timed(stage.search, cache, vectors, query, rule, args.top, args.candidates)[1]
                 for _ in range(args.repeats)]
        row[f"query_{rule}_s"] = statistics.median(times)
        progress(f"{videos}: {rule} query {row[f'query_{rule}_s']:.3f} s (of {[round(t, 3) for t in times]})")
    if args.cli:
        for rule in RULES:
            tic = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "bike_cli", "search", "--features", str(path), "a dog",
                                   "--rule", rule, "--top", str(args.top), "--candidates", str(args.candidates),
                                   "--json", "-q"], capture_output=True, text=True)
            row[f"cli_{rule}_s"] = time.perf_counter() - tic
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            row[f"cli_{rule}_inside"] = json.loads(done.stdout)["seconds"]
            progress(f"{videos}: bike search --rule {rule}: {row[f'cli_{rule}_s']:.2f} s whole process")
    return row


def plain_open(path: Path) -> None:
    """What the cache reader read on opening before it checked the file: no helper, no checks."""
    with h5py.File(path, "r") as h5:
        dict(h5.attrs)
        list(h5["video_ids"].asstr()[()])
        h5["labels"][()]


def plain_index(path: Path) -> None:
    with h5py.File(index_path(path), "r") as h5:
        dict(h5.attrs)
        h5["vectors"][()]


def fresh(cold: bool = False) -> None:
    """The state of a new process: no verdict kept, no index in memory (and with `cold` no helper)."""
    if cold:
        untrusted_hdf5._HELPER.kill()
    untrusted_hdf5._PASSED.clear()
    stage._MEMO.clear()


def median_s(func, *args, before=fresh, repeats: int = 5) -> float:
    """Median seconds of `func(*args)` over `repeats` calls, each after `before()` (not timed)."""
    times = []
    for _ in range(repeats):
        before()
        times.append(timed(func, *args)[1])
    return statistics.median(times)


def bench_open(path: Path, repeats: int) -> dict:
    """The cost of reading the cache and its index as untrusted files, beside plain h5py reads (medians)."""
    row = {"open_plain_s": median_s(plain_open, path, repeats=repeats),
           "open_checked_cold_s": median_s(FeatureCache, path, before=lambda: fresh(cold=True), repeats=repeats),
           "open_checked_warm_s": median_s(FeatureCache, path, repeats=repeats)}
    cache = FeatureCache(path)
    row["open_repeat_s"] = median_s(FeatureCache, path, before=lambda: None, repeats=repeats)
    row["index_plain_s"] = median_s(plain_index, path, repeats=repeats)
    row["index_load_fast_s"] = median_s(stage.load_index, cache, Progress(), repeats=repeats)
    row["cache_sha256_s"] = median_s(file_sha256, path, repeats=repeats)
    touched = []
    for _ in range(repeats):
        os.utime(path)  # a new mtime and ctime, the same bytes: what a copy looks like
        fresh()
        cache = FeatureCache(path)
        (_, info), seconds = timed(stage.load_index, cache, Progress())
        assert not info["built"]
        touched.append(seconds)
    row["index_load_touched_s"] = statistics.median(touched)
    row["index_load_restamped_s"] = median_s(stage.load_index, cache, Progress(), repeats=repeats)
    progress(f"{path.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, nargs="+", default=[20000, 240000])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cli", action="store_true", help="also time the whole `bike search` process")
    parser.add_argument("--workdir", type=Path, default=None, help="where the caches go (kept; default: a temp dir)")
    parser.add_argument("--out-json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = [bench_size(workdir, n, args) for n in args.videos]
    report = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "target_s": TARGET_S, "rows": rows}
    print(json.dumps(report, indent=2))
    if args.out_json:
        args.out_json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
