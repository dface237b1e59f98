"""Rich output at 80 columns: long headers, paths and 'mean ± std' cells fold; nothing ends in '…'."""

from __future__ import annotations

import os
import subprocess
import sys

BIKE = [sys.executable, "-m", "bike_cli"]


def column(text: str, number: int) -> str:
    """Column `number` (from 1) of a table's rows, its lines joined: what its folded cells hold."""
    return "".join(line.split("│")[number].strip() for line in text.splitlines() if line.startswith("│"))


def bike80(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BIKE, "-q", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"})


def test_zero_shot_half_metrics_fit_80_columns(tiny_cache, tmp_path):
    evaluated = bike80("eval", "--features", str(tiny_cache), "--protocol", "zero-shot-half", "--out",
                       str(tmp_path / "ev"), "--workers", "0")
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stderr.splitlines()
    assert "…" not in evaluated.stderr and all(len(line) <= 80 for line in lines)
    assert "mean class acc" in evaluated.stderr and evaluated.stderr.count(" ± ") >= 4  # mean ± std per metric
    scores = tmp_path / "ev" / "video_scores.csv"
    fused = bike80("fuse", str(scores), str(scores), "--protocol", "zero-shot-half", "--out", str(tmp_path / "f.csv"))
    assert fused.returncode == 0, fused.stderr
    assert "…" not in fused.stderr
    assert str(scores) in column(fused.stderr, 1)  # the whole input path, folded over lines


def test_summary_paths_fold(tiny_cache, tmp_path):
    done = bike80("gen-attributes", "--features", str(tiny_cache), "--lexicon", "hmdb51", "--out",
                  str(tmp_path / "attributes_with_a_long_name_to_fold_at_eighty_columns.csv"))
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stderr and "attributes_with_a_long_name_to_fold_at_eighty_columns.csv" in column(done.stderr, 2)
