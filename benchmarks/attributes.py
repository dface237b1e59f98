"""Benchmark of `bike gen-attributes`: time per video once the phrase embeddings exist, and memory.

On a synthetic feature cache (--videos videos of --views x --frames random frame embeddings of the
model's size) and a lexicon of --phrases made-up, distinct phrases, side by side in one run:

  (a) phrases     the first run, which encodes the lexicon and writes the phrase-embedding file;
  (b) stage       `run_gen_attributes` again (phrase file reused): the whole stage in this process
                  (model load, reading the cache, chunked top-k, CSV writing), with its own step times;
  (c) naive       the same top-k from the whole [N, P] similarity matrix and a full numpy argsort;
  (d) S_A         the stage with --scores (every distinct attribute sentence through the text encoder);
  (e) memory      peak resident memory added by `select_attributes` alone, for several --chunk-size
                  values, with --phrases and with --big-phrases random phrase embeddings (the
                  element budget --max-elements then bounds the phrase blocks).

Timings are medians of --repeats runs. Peak memory is measured in a fresh spawned process per
setting: the rise of its VmHWM over its resident size just before the call (the high-water mark is
reset through /proc/self/clear_refs, Linux only), after a warm-up call with a tiny chunk.

    .venv/bin/python benchmarks/attributes.py --videos 10000 --phrases 1000 --model bike-tiny
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

from bike_cli.config.stages import GenAttributesConfig
from bike_cli.io.feature_cache import (
    Batch,
    CacheMeta,
    FeatureCache,
    PartWriter,
    finish,
    merge,
    parts_dir_for,
    scan_parts,
    write_meta_file,
)
from bike_cli.models.attributes import select_attributes
from bike_cli.models.registry import resolve_model_name
from bike_cli.stages.gen_attributes import run_gen_attributes

WORDS = ("red", "blue", "small", "large", "old", "young", "happy", "wet", "dog", "cat", "car", "ball", "tree",
         "river", "kitchen", "street", "person", "child", "guitar", "bike", "running", "jumping", "eating",
         "cooking", "swimming", "dancing", "reading", "painting", "climbing", "throwing")
WRITE_BATCH = 1000


def make_cache(path: Path, videos: int, views: int, frames: int, model: str, classes: int, seed: int) -> Path:
    """A feature cache of random frame embeddings, written through the cache's own part-and-merge path."""
    dim = open_clip.get_model_config(resolve_model_name(model))["embed_dim"]
    meta = CacheMeta(
        model_name=resolve_model_name(model), pretrained="none", checkpoint_sha256=None, quick_gelu=False,
        image_size=64, embed_dim=dim, frames=frames, clips=views, crops=1, sampling_mode="test", seed=0,
        decoder="decord", multilabel=False, num_classes=classes,
        class_names=tuple(f"{WORDS[i % len(WORDS)]} class {i}" for i in range(classes)),
    )
    rng = np.random.default_rng(seed)
    parts = parts_dir_for(path)
    write_meta_file(parts, meta)
    writer = PartWriter(parts, 0)
    for start in range(0, videos, WRITE_BATCH):
        n = min(WRITE_BATCH, videos - start)
        writer.write(Batch(
            list_index=np.arange(start, start + n), video_ids=[f"video_{i:07d}" for i in range(start, start + n)],
            embeddings=rng.normal(size=(n, views, frames, dim)).astype(np.float16),
            labels=rng.integers(0, classes, n), num_frames=np.full(n, 100), decoders=["decord"] * n))
    merge(path, scan_parts(parts), meta)
    finish(parts)
    return path


def make_lexicon(path: Path, phrases: int, seed: int) -> Path:
    """`phrases` distinct three-word phrases with a number, one per line."""
    rng = np.random.default_rng(seed)
    lines = [f"{' '.join(rng.choice(WORDS, 3))} {i}" for i in range(phrases)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def median_seconds(fn, repeats: int) -> tuple[float, list]:
    times, results = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - started)
    return statistics.median(times), results


def naive_topk(cache_path: Path, phrase_file: Path, k: int) -> np.ndarray:
    """Mean-pool every video, one [N, P] matrix, a full argsort: what the stage computes in chunks."""
    with FeatureCache(cache_path) as cache:
        emb = cache.embeddings(slice(0, len(cache))).astype(np.float32).mean((1, 2))  # [N, D]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    phrases = torch.load(phrase_file, weights_only=True)["embeddings"].numpy()  # [P, D]
    return np.argsort(-(emb @ phrases.T), axis=1)[:, :k]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _probe_peak_mib(cache_path: Path, phrases: int, dim: int, k: int, chunk: int, max_elements: int) -> float:
    """In a fresh process: MiB the resident high-water mark rises while `select_attributes` runs."""
    phrase_emb = torch.nn.functional.normalize(torch.randn(phrases, dim), dim=1)
    with FeatureCache(cache_path) as cache:
        select_attributes(cache, phrase_emb, k, chunk_size=16, max_elements=max_elements)  # warm-up: imports, file
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
        select_attributes(cache, phrase_emb, k, chunk_size=chunk, max_elements=max_elements)
    return (_status_kib("VmHWM") - before) / 1024


def memory_table(cache_path: Path, phrases: int, dim: int, k: int, chunks: list[int], max_elements: int) -> dict:
    """Peak MiB per chunk size, each measured in its own spawned process (no memory kept from before)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        return {chunk: pool.apply(_probe_peak_mib, (cache_path, phrases, dim, k, chunk, max_elements))
                for chunk in chunks}


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    report: dict = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="bike-bench-attrs-") as tmp_name:
        tmp = Path(tmp_name)
        cache = make_cache(tmp / "cache.h5", args.videos, args.views, args.frames, args.model, args.classes, 0)
        lexicon = make_lexicon(tmp / "lexicon.txt", args.phrases, 1)
        cfg = GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp / "attrs.csv", top_k=args.top_k,
                                  chunk_size=args.chunk_size, max_elements=args.max_elements, device=args.device)
        first = time.perf_counter()
        run_gen_attributes(cfg)
        report["phrases_s"] = time.perf_counter() - first

        stage_s, summaries = median_seconds(lambda: run_gen_attributes(cfg), args.repeats)
        assert all(s.phrase_cache_reused for s in summaries)
        steps = {name: statistics.median(s.seconds[name] for s in summaries) for name in summaries[0].seconds}
        report["stage"] = {"seconds": stage_s, "ms_per_video": 1000 * stage_s / args.videos, "steps": steps,
                           "ms_per_video_without_load": 1000 * (steps["total"] - steps["load"]) / args.videos}

        naive_s, naive = median_seconds(lambda: naive_topk(cache, cfg.phrase_cache_path, args.top_k), args.repeats)
        phrase_emb = torch.load(cfg.phrase_cache_path, weights_only=True)["embeddings"]
        with FeatureCache(cache) as opened:
            chosen = select_attributes(opened, phrase_emb, args.top_k, chunk_size=args.chunk_size).indices
        report["naive"] = {"seconds": naive_s, "ms_per_video": 1000 * naive_s / args.videos,
                           "same_top_k": float((naive[0] == chosen).all(1).mean())}

        if args.scores:
            scored = GenAttributesConfig(**{**vars(cfg), "scores": tmp / "scores.csv"})
            started = time.perf_counter()
            summary = run_gen_attributes(scored)
            report["scores"] = {"seconds": time.perf_counter() - started, "steps": summary.seconds,
                                "ms_per_video": 1000 * summary.seconds["scores"] / args.videos}

        chunks = [int(c) for c in args.memory_chunks.split(",")]
        dim = phrase_emb.shape[1]
        report["memory_mib"] = {
            "lexicon": memory_table(cache, args.phrases, dim, args.top_k, chunks, args.max_elements),
            "big": memory_table(cache, args.big_phrases, dim, args.top_k, chunks, args.max_elements),
        }
        report["big_phrases_bytes_mib"] = args.big_phrases * dim * 4 / 2**20
    return report


def print_report(report: dict, args: argparse.Namespace) -> None:
    stage, naive = report["stage"], report["naive"]
    print(f"gen-attributes: {args.videos} videos x {args.views} views x {args.frames} frames, {args.phrases} phrases, "
          f"top-{args.top_k}, {args.model}, {report['threads']} torch threads")
    print(f"  (a) phrase encoding, first run : {report['phrases_s']:.2f} s")
    print(f"  (b) stage, phrases reused      : {stage['seconds']:.3f} s = {stage['ms_per_video']:.4f} ms/video "
          f"({stage['ms_per_video_without_load']:.4f} ms/video without the model load)")
    print("      steps: " + ", ".join(f"{k} {v:.3f} s" for k, v in stage["steps"].items()))
    print(f"  (c) naive full matrix + argsort: {naive['seconds']:.3f} s = {naive['ms_per_video']:.4f} ms/video "
          f"(top-k identical for {100 * naive['same_top_k']:.2f} % of videos)")
    if "scores" in report:
        print(f"  (d) S_A (--scores)             : {report['scores']['steps']['scores']:.2f} s more = "
              f"{report['scores']['ms_per_video']:.3f} ms/video")
    print(f"  (e) peak memory of select_attributes (MiB above RSS), --max-elements {args.max_elements}:")
    print(f"      chunk size  {args.phrases} phrases  {args.big_phrases} phrases")
    for chunk in report["memory_mib"]["lexicon"]:
        print(f"      {chunk:>10}  {report['memory_mib']['lexicon'][chunk]:>12.1f}  "
              f"{report['memory_mib']['big'][chunk]:>14.1f}")
    print(f"      ({args.big_phrases} phrase embeddings themselves: {report['big_phrases_bytes_mib']:.1f} MiB, "
          "allocated before the measurement)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=10_000)
    p.add_argument("--phrases", type=int, default=1_000)
    p.add_argument("--model", default="bike-tiny", help="architecture (random init) [bike-tiny]")
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--classes", type=int, default=400)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--chunk-size", type=int, default=4096, help="the stage's default")
    p.add_argument("--max-elements", type=int, default=1 << 25, help="the stage's default")
    p.add_argument("--device", default=None, help="[cuda when available, else cpu]")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scores", action="store_true", help="also time S_A (--scores)")
    p.add_argument("--memory-chunks", default="256,1024,4096,16384")
    p.add_argument("--big-phrases", type=int, default=100_000, help="lexicon size of the second memory column")
    p.add_argument("--out-json", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print_report(report, args)
    if args.out_json:
        args.out_json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
