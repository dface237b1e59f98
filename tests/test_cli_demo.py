"""`bike demo`: generated data through every stage bike has, and a re-run that reuses the outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.io.attributes_csv import read_attributes_csv
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.io.feature_cache import FeatureCache

runner = CliRunner()


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--videos-per-class", "6", "--workers", "0"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Video branch" in result.output and "25.0 %" in result.output  # the final table, with chance
    assert "WARNING" not in result.output  # a first run warns of nothing (no missing resume checkpoint)
    train, val = FeatureCache(out / "features" / "train.h5"), FeatureCache(out / "features" / "val.h5")
    assert (len(train), len(val)) == (16, 8)
    assert val.meta.num_views == 6 and train.meta.num_views == 1
    assert load_video_checkpoint(out / "runs" / "video" / "last.pt").epoch == 20
    metrics = json.loads((out / "results" / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"video", "attrs", "fused"}
    assert metrics["video"]["top1"] > 25.0  # the trained Video branch beats chance on held-out videos
    assert len(read_attributes_csv(out / "attributes" / "val.csv").video_ids) == 8
    assert (out / "results" / "explain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "search: 1. " in result.output and " 3. " in result.output  # one query over the val cache, its top 3
    assert (out / "results" / "search_hits.csv").is_file()
    again = runner.invoke(app, ["demo", "--out", str(out), "--videos-per-class", "6", "--workers", "0"])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("inside", [False, True], ids=["the-file", "a-folder-inside-it"])
def test_demo_into_an_existing_file_is_one_line_naming_it(tmp_path, inside):
    """`demo --out FILE` (or FILE/sub) was a NotADirectoryError traceback: now one line, exit 1, nothing made."""
    existing = tmp_path / "notes.txt"
    existing.write_text("mine\n")
    out = existing / "demo" if inside else existing
    done = subprocess.run([sys.executable, "-m", "bike_cli", "demo", "--out", str(out), "--workers", "0"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: --out {out}: {existing} is an existing file, so no folder can be made in it; give a folder "
        "(new or one bike wrote)" if inside else
        f"error: --out {out} is an existing file; give a folder (new or one bike wrote)"]
    assert existing.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
