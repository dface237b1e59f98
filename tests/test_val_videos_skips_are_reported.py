"""End-to-end training's validation over --val-videos says which videos it could not decode, as
extract-features does: a warning with the count, `val_skipped` in the epoch's record, and the ids and
reasons in the run folder's `val_failures.csv`; metrics over the rest, never silently."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys


def test_undecodable_validation_videos_are_counted_listed_and_warned_about(tmp_path, sample_data):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00not a video" * 100)
    rows = sample_data.val.read_text().splitlines()
    label = rows[1].rsplit(",", 1)[1]
    val = tmp_path / "val.csv"
    val.write_text("\n".join([*rows, f"videos/missing.mp4,{label}", f"{corrupt},{label}"]) + "\n")
    videos = len(rows) - 1 + 2
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "bike_cli", "train-video", "--videos", str(sample_data.train), "--val-videos", str(val),
         "--val-root", str(sample_data.root), "--classes", str(sample_data.classes), "--model", "bike-tiny",
         "--pretrained", "none", "--out", str(run), "--epochs", "1", "--batch-size", "6", "--frames", "4",
         "--lr", "1e-3", "--workers", "0", "--template", "{}", "--temporal-layers", "1"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, timeout=600)
    assert result.returncode == 0, result.stderr
    warning = " ".join(result.stderr.split())
    assert f"validation skipped 2 of the {videos} videos of --val-videos" in warning
    assert f"(the metrics are over the other {videos - 2})" in warning
    assert "videos/missing.mp4 (file not found" in warning and str(run / "val_failures.csv") in warning

    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["val_skipped"] == 2 and "val_top1" in record
    with open(run / "val_failures.csv", newline="") as fh:
        failures = list(csv.DictReader(fh))
    assert [f["video_id"] for f in failures] == ["videos/missing.mp4", str(corrupt)]
    assert failures[0]["reason"].startswith("file not found") and failures[1]["reason"]
    assert "best val_skipped" not in result.stderr  # a count, not a score of the best epoch


def test_a_validation_list_that_decodes_no_video_is_one_line(tmp_path, sample_data):
    val = tmp_path / "val.csv"
    val.write_text("path,label\nvideos/missing_1.mp4,0\nvideos/missing_2.mp4,1\n")
    result = subprocess.run(
        [sys.executable, "-m", "bike_cli", "train-video", "--videos", str(sample_data.train), "--val-videos", str(val),
         "--val-root", str(sample_data.root), "--classes", str(sample_data.classes), "--model", "bike-tiny",
         "--pretrained", "none", "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "6",
         "--frames", "4", "--workers", "0", "--template", "{}", "--temporal-layers", "1"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, timeout=600)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "none of the 2 videos of --val-videos could be read" in " ".join(result.stderr.split())
