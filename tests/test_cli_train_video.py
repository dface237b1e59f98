"""`bike train-video` through the CLI: options, recipes, and a two-process run equal to one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.io.checkpoints import load_video_checkpoint

runner = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def args(train: Path, out: Path, *extra: str) -> list[str]:
    return ["train-video", "--features", str(train), "--out", str(out), "--epochs", "2", "--batch-size", "8",
            "--lr", "2e-3", "--warmup-epochs", "1", "--workers", "0", "--template", "{}",
            "--temporal-layers", "2", *extra]


def test_help_explains_the_options():
    result = runner.invoke(app, ["train-video", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--features", "--videos", "--classes", "--val-features", "--val-videos", "--model",
                   "--pretrained", "--frames", "--head", "--temporal", "--vcs-tokens", "--epochs",
                   "--batch-size", "--lr", "--out", "--recipe", "--resume", "--shots", "--seed", "--init-from"):
        assert option in result.output, option


def test_trains_and_saves_the_resolved_config(tmp_path, motion_caches):
    _, train, val = motion_caches
    result = runner.invoke(app, args(train, tmp_path / "run", "--val-features", str(val), "--head", "mean"))
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["stage"] == "train-video" and resolved["head"] == "mean" and resolved["epochs"] == 2
    assert load_video_checkpoint(tmp_path / "run" / "last.pt").epoch == 2


def test_recipe_values_are_overridden_by_options(tmp_path, motion_caches):
    _, train, _ = motion_caches
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: train-video\nhead: vcs\ntemporal: none\nepochs: 7\n")
    result = runner.invoke(app, [*args(train, tmp_path / "run"), "--recipe", str(recipe)])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (resolved["head"], resolved["temporal"], resolved["epochs"]) == ("vcs", "none", 2)


def test_paper_recipe_against_a_bike_tiny_cache_is_a_clear_error(tmp_path, motion_caches):
    _, train, _ = motion_caches
    result = runner.invoke(app, [*args(train, tmp_path / "run"), "--recipe", str(RECIPES / "k400_vitb32_8f.yaml")])
    assert result.exit_code == 1
    recipe = RECIPES / "k400_vitb32_8f.yaml"  # the recipe's key is named, not an option the user never typed
    assert f"model: ViT-B-32 ({recipe}:3) differs from bike-tiny" in " ".join(result.output.split())


def test_bad_recipe_key_names_file_and_suggestion(tmp_path, motion_caches):
    _, train, _ = motion_caches
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: train-video\nepoch: 3\n")
    result = runner.invoke(app, [*args(train, tmp_path / "run"), "--recipe", str(recipe)])
    assert result.exit_code == 1
    assert str(recipe) in " ".join(result.output.split()) and "epochs" in result.output


@pytest.mark.slow
def test_two_processes_train_the_same_weights_as_one(tmp_path, motion_caches):
    _, train, _ = motion_caches
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launched = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bike_cli",
         *args(train, tmp_path / "two")],
        capture_output=True, text=True, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 process(es)" in " ".join(launched.stderr.split())
    one = runner.invoke(app, args(train, tmp_path / "one"))
    assert one.exit_code == 0, one.output
    a = load_video_checkpoint(tmp_path / "one" / "last.pt").state_dict
    b = load_video_checkpoint(tmp_path / "two" / "last.pt").state_dict
    # Adam divides by the gradient's own size, so a parameter whose true gradient is exactly zero (the
    # attention's key bias: softmax ignores it) moves by float noise of up to lr per step: 1e-4, not 1e-5.
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, atol=1e-4, rtol=1e-4, msg=key)
    losses = [[json.loads(line)["train_loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
