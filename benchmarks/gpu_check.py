"""The GPU figures in one go (run by benchmarks/gpu_check.sh after `pytest -m cuda`); no downloads.

1. extract   `run_extraction` with ViT-B-16 (random weights) on the shared clips linked in turn to
             --videos entries (8 frames, 1x1 views): the stage's frames/s against the model alone
             (`FrameEncoder` on random uint8 frames already on the host). Target >= 80 %.
2. train     `run_train_video` for one epoch from a Kinetics-400-sized synthetic cache (--train-rows
             x 1 view x 8 x 512) held in GPU memory (`--cache-in-memory on`), VCS + temporal
             transformer, batch 256: clips/s of the epoch (the authors report ~44 clips/s per V100
             end to end).
3. eval      `run_eval` of --eval-videos x 12 views (4x3) with the checkpoint of 2: seconds. Target < 60 s.

--dry-run: the same steps with bike-tiny, tiny sizes, on the CPU (generated videos where the shared
clips are absent); what the test suite runs.

    python benchmarks/gpu_check.py --out gpu_check.json [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval import build_cache  # noqa: E402  (benchmarks/eval.py: a synthetic cache in the documented layout)

CLIPS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
READABLE = (".mp4", ".webm", ".mkv", ".avi", ".mov")
EXTRACT_TARGET, EVAL_TARGET_S = 0.80, 60.0


def sizes(args: argparse.Namespace) -> dict:
    if args.dry_run:
        return {"model": "bike-tiny", "dim": 64, "videos": 6, "train_rows": 600, "eval_videos": 40, "classes": 20,
                "device": "cpu", "workers": 0}
    return {"model": "ViT-B-16", "dim": 512, "videos": args.videos, "train_rows": args.train_rows,
            "eval_videos": args.eval_videos, "classes": 400, "device": "cuda", "workers": min(8, os.cpu_count() or 1)}


def video_list(tmp: Path, count: int, clips: Path) -> Path:
    """A list of `count` entries linking the shared clips in turn (generated videos without them)."""
    sources = sorted(p for p in clips.glob("*") if p.suffix in READABLE) if clips.is_dir() else []
    if not sources:
        from bike_cli.data.synthetic import make_sample_dataset

        sources = sorted(make_sample_dataset(tmp / "generated", videos_per_class=2, val_fraction=0.0).root.rglob("*.mp4"))
    root = tmp / "videos"
    root.mkdir()
    lines = []
    for i in range(count):
        link = root / f"v{i:04d}{sources[i % len(sources)].suffix}"
        link.symlink_to(sources[i % len(sources)].resolve())
        lines.append(f"{link.name} {i % len(sources)}\n")
    (root / "list.txt").write_text("".join(lines))
    return root / "list.txt"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_extract(tmp: Path, s: dict, clips: Path) -> dict:
    from bike_cli.config.stages import ExtractConfig
    from bike_cli.engine.frame_encoder import FrameEncoder
    from bike_cli.models.clip import load_clip
    from bike_cli.stages.extract import run_extraction

    device = torch.device(s["device"])
    cfg = ExtractConfig(list_path=video_list(tmp, s["videos"], clips), root=tmp / "videos", out=tmp / "extract.h5",
                        model=s["model"], pretrained="none", frames=8, workers=s["workers"], batch_size=16,
                        device=s["device"])
    summary = run_extraction(cfg)
    frames = summary.extracted * 8
    model, spec = load_clip(s["model"], "none", device=device)
    encoder = FrameEncoder(model, spec, device, "auto")
    batch = torch.randint(0, 256, (16, 8, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    encoder(batch[:1])  # warm-up
    sync(device)
    started, rounds = time.perf_counter(), max(1, summary.extracted // 16)
    for _ in range(rounds):
        encoder(batch)
    sync(device)
    model_fps = rounds * batch.shape[0] * 8 / (time.perf_counter() - started)
    stage_fps = frames / summary.seconds
    return {"videos": summary.extracted, "failed": summary.failed, "stage_s": summary.seconds,
            "stage_frames_per_s": stage_fps, "model_frames_per_s": model_fps, "ratio": stage_fps / model_fps,
            "target": EXTRACT_TARGET, "target_met": stage_fps / model_fps >= EXTRACT_TARGET}


def check_train(tmp: Path, s: dict) -> tuple[dict, Path]:
    from bike_cli.config.stages import TrainVideoConfig
    from bike_cli.stages.train_video import run_train_video

    started = time.perf_counter()
    cache = build_cache(tmp / "train.h5", s["train_rows"], 1, 1, 8, s["dim"], s["classes"], model=s["model"])
    build_s = time.perf_counter() - started
    cfg = TrainVideoConfig(features=cache, out=tmp / "train", epochs=1, batch_size=256, warmup_epochs=0.1,
                           head="vcs", temporal="transformer", workers=0, cache_in_memory="on", templates=["{}"])
    summary = run_train_video(cfg)
    epoch_s = summary.last_metrics["seconds"]
    return {"rows": s["train_rows"], "cache_build_s": build_s, "stage_s": summary.seconds, "epoch_s": epoch_s,
            "clips_per_s": s["train_rows"] / epoch_s, "authors_end_to_end_clips_per_s_per_v100": 44,
            "train_loss": summary.last_metrics["train_loss"]}, tmp / "train" / "last.pt"


def check_eval(tmp: Path, s: dict, checkpoint: Path) -> dict:
    from bike_cli.config.stages import EvalConfig
    from bike_cli.stages.evaluate import run_eval

    cache = build_cache(tmp / "eval.h5", s["eval_videos"], 4, 3, 8, s["dim"], s["classes"], model=s["model"])
    started = time.perf_counter()
    run_eval(EvalConfig(out=tmp / "eval", checkpoint=checkpoint, features=cache, device=s["device"]))
    wall = time.perf_counter() - started
    stage = json.loads((tmp / "eval" / "metrics.json").read_text())["seconds"]
    return {"videos": s["eval_videos"], "views": 12, "wall_s": wall, "stage_s": stage,
            "target_s": EVAL_TARGET_S, "target_met": wall < EVAL_TARGET_S}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON of figures [gpu_check.json]")
    p.add_argument("--dry-run", action="store_true", help="same steps, tiny sizes, bike-tiny, on the CPU")
    p.add_argument("--videos", type=int, default=203, help="extract: videos (the clips repeated) [203]")
    p.add_argument("--train-rows", type=int, default=240_000, help="train: rows of the cache [240000, K400]")
    p.add_argument("--eval-videos", type=int, default=20_000, help="eval: videos x 12 views [20000]")
    p.add_argument("--clips", type=Path, default=CLIPS_DIR)
    p.add_argument("--pytest-rc", type=int, help="exit status of `pytest -m cuda` (from gpu_check.sh)")
    args = p.parse_args(argv)
    s = sizes(args)
    if s["device"] == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run on a CPU machine)", file=sys.stderr)
        return 2
    report: dict = {"dry_run": args.dry_run, "sizes": s, "pytest_cuda_rc": args.pytest_rc,
                    "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                                "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}}
    with tempfile.TemporaryDirectory(prefix="bike-gpu-check-") as name:
        tmp = Path(name)
        for step in ("extract", "train", "eval"):
            started = time.perf_counter()
            if step == "extract":
                report["extract"] = check_extract(tmp, s, args.clips)
            elif step == "train":
                report["train"], checkpoint = check_train(tmp, s)
            else:
                report["eval"] = check_eval(tmp, s, checkpoint)
            report[step]["step_wall_s"] = time.perf_counter() - started
            print(f"[{time.strftime('%H:%M:%S')}] {step}: {json.dumps(report[step])}", file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")  # what is done so far survives a later failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
