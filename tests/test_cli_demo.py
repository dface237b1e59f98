"""`bike demo`: generated data through every stage bike has, and a re-run that reuses the outputs."""

from __future__ import annotations

import json

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
