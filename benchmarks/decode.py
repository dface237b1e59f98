"""Benchmark of decoding only the sampled frames: decord, PyAV, and PyAV decoding less, exactly.

Per clip of ../shared/data/clips and per sampling (T = 8 and 16 frames, test and train mode, one
clip of T frames, frames resized to a short side of 224 while decoding, as extract-features does),
side by side in one run, interleaved, median of --repeats, in wall and in CPU seconds (the CPU
seconds of this process's threads: the work done, less disturbed by other processes on a shared machine):

    decord            decord `get_batch` through bike's `read_frames` (the default before this change), 1 thread
    decord-tN         the same with decord's num_threads = N (0: decord decides)
    pyav-seq          PyAV decoding every frame up to the last one kept, 1 thread (the old PyAV path)
    pyav-seq-tN       the same with PyAV frame threading, N threads
    pyav-nonref       PyAV skipping non-reference frames that are not kept (skip_frame NONREF), 1 thread
    pyav-fast         nonref plus jumping to the closed-GOP key frame before a kept frame after a gap, 1 thread
                      (bike's PyAV path now: `read_frames(decoder="pyav")`)
    pyav-fast-tN      the same with N threads

Frames decoded per frame kept: counted for the PyAV methods (frames the decoder produced); for
decord estimated as the frames from the key frame before each kept frame (or from the previous kept
frame) up to it, which is what its seek-and-decode-forward does. pyav-fast's count is the frames that
must be decoded: the kept frames and the reference frames they depend on since the last key frame.
Where timestamps do not allow that plan (the packed B-frames of the AVI), the PyAV methods decode
sequentially, as `read_frames` does ("sequential_fallback").
Every PyAV method's kept frames are compared with a full sequential decode (bit-identical or not).

    .venv/bin/python benchmarks/decode.py --out-json decode.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np

from bike_cli.data.decoding.frames import PlanError, resized_size
from bike_cli.data.decoding.pyav_backend import (
    decode_kept,
    decode_sequentially,
    read_packets,
    read_pyav,
    to_rgb,
    upright_hw,
)
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import segment_indices, video_seed

CLIPS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
SIZE = 224
TARGET = 0.75  # decode time of the new default over decord's
PLAN_FAILED = 1_000_000  # added to a decoded count where the plan failed and the decode was sequential


def sampling(num_frames: int, frames: int, mode: str, name: str) -> np.ndarray:
    rng = np.random.default_rng(video_seed(0, name)) if mode == "train" else None
    return np.minimum(segment_indices(num_frames, frames, mode=mode, rng=rng).ravel(), num_frames - 1)


def convert(frame: av.VideoFrame) -> np.ndarray:
    return to_rgb(frame, resized_size(*upright_hw(frame), SIZE))


def pyav(path: Path, wanted: set[int], threads: int, method: str) -> tuple[dict, int]:
    """Kept frames {index: rgb} and frames decoded, by one of the PyAV methods."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        if method == "seq":
            return decode_sequentially(container.decode(stream), wanted, SIZE)
        packets = read_packets(container, stream)
        try:
            return decode_kept(stream, packets, wanted, convert, skip=True, jump=method == "fast")
        except PlanError:  # what read_frames does then: decode sequentially
            pass
    kept, decoded = pyav(path, wanted, threads, "seq")
    return kept, decoded + PLAN_FAILED


def decord_estimate(path: Path, kept: np.ndarray) -> int:
    """Frames decord decodes for sorted distinct `kept`: from the key frame before each (or the frame
    after the previous kept one, when no key frame lies between) up to it, in presentation order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
    order = np.argsort([p.pts for p in packets])
    keys = [i for i, k in enumerate(order) if packets[k].is_keyframe]
    total, position = 0, -1
    for index in np.unique(kept):
        key = max([k for k in keys if k <= index], default=0)
        start = max(key, position + 1) if key <= position else key
        total += index - start + 1
        position = index
    return total


def methods(threads: list[int]) -> list[str]:
    names = ["decord"] + [f"decord-t{n}" for n in threads] + ["pyav-seq"] + [f"pyav-seq-t{n}" for n in threads]
    return names + ["pyav-nonref", "pyav-fast"] + [f"pyav-fast-t{n}" for n in threads]


def run_method(name: str, path: Path, indices: np.ndarray) -> tuple[float, float, dict | None, int | None]:
    """(wall s, CPU s of this process's threads, kept frames or None, frames decoded or None)."""
    threads = int(name.rsplit("-t", 1)[1]) if "-t" in name else 1
    started, cpu = time.perf_counter(), time.process_time()
    kept, decoded = None, None
    if name.startswith("decord"):
        read_frames(path, lambda n: indices, short_side=SIZE, decoder="decord", fallback=False,
                    num_threads=threads)
    else:
        method = "seq" if "seq" in name else "nonref" if "nonref" in name else "fast"
        kept, decoded = pyav(path, set(indices.tolist()), threads, method)
    return time.perf_counter() - started, time.process_time() - cpu, kept, decoded


def bench_clip(path: Path, args: argparse.Namespace) -> dict:
    num_frames = read_pyav(path, lambda n: [0], None, 1, "shortest").num_frames
    results = {}
    for frames in args.frames:
        for mode in ("test", "train"):
            indices = sampling(num_frames, frames, mode, path.name)
            reference, _ = pyav(path, set(indices.tolist()), 1, "seq")
            times: dict[str, list[float]] = {m: [] for m in methods(args.threads)}
            cpu: dict[str, list[float]] = {m: [] for m in times}
            decoded, identical, fell_back = {}, {}, {}
            for _ in range(args.repeats):
                for name in times:
                    seconds, cpu_s, kept, count = run_method(name, path, indices)
                    times[name].append(seconds)
                    cpu[name].append(cpu_s)
                    if kept is not None:
                        decoded[name] = count % PLAN_FAILED
                        if count >= PLAN_FAILED:
                            fell_back[name] = True
                        identical[name] = all(np.array_equal(kept[i], reference[i]) for i in reference)
            kept_count = len(set(indices.tolist()))
            decoded["decord"] = decord_estimate(path, indices)
            results[f"T{frames}-{mode}"] = {
                "kept": kept_count, "num_frames": num_frames,
                "ms": {m: 1000 * statistics.median(t) for m, t in times.items()},
                "cpu_ms": {m: 1000 * statistics.median(t) for m, t in cpu.items()},
                "decoded_per_kept": {m: c / kept_count for m, c in decoded.items()},
                "identical": identical, "sequential_fallback": sorted(fell_back)}
    return results


def summary(report: dict) -> dict:
    """Per sampling: sum over clips of each method's median ms, ratio to decord, decoded per kept."""
    out = {}
    for key in next(iter(report.values())):
        ms: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for clip in report.values():
            for m, v in clip[key]["ms"].items():
                ms[m] = ms.get(m, 0.0) + v
                cpu[m] = cpu.get(m, 0.0) + clip[key]["cpu_ms"][m]
        decoded = {m: sum(c[key]["decoded_per_kept"].get(m, 0) * c[key]["kept"] for c in report.values())
                   / sum(c[key]["kept"] for c in report.values()) for m in ("decord", "pyav-seq", "pyav-nonref", "pyav-fast")}
        out[key] = {"total_ms": ms, "over_decord": {m: v / ms["decord"] for m, v in ms.items()},
                    "total_cpu_ms": cpu, "cpu_over_decord": {m: v / cpu["decord"] for m, v in cpu.items()},
                    "decoded_per_kept": decoded,
                    "all_identical": all(all(c[key]["identical"].values()) for c in report.values())}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, default=CLIPS_DIR, help=f"folder of clips [{CLIPS_DIR}]")
    p.add_argument("--frames", type=lambda s: [int(v) for v in s.split(",")], default=[8, 16], help="T values [8,16]")
    p.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[2], help="thread counts [2]")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median) [3]")
    p.add_argument("--out-json", type=Path)
    args = p.parse_args(argv)
    clips = [c for c in sorted(args.clips.glob("*")) if c.suffix not in (".tsv", ".mp3")]
    report = {}
    for clip in clips:
        report[clip.name] = bench_clip(clip, args)
        print(f"[{time.strftime('%H:%M:%S')}] {clip.name} done", file=sys.stderr, flush=True)
    document = {"clips": report, "summary": summary(report), "load_average_end": os.getloadavg(),
                "args": {k: str(v) for k, v in vars(args).items()}}
    print(json.dumps(document["summary"], indent=2))
    if args.out_json:
        args.out_json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
