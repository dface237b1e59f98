"""extract-features -> eval -> train-video through the CLI for each kind of text tower (tiny configs)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import h5py
import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.io.checkpoints import load_video_checkpoint

runner = CliRunner()


@pytest.mark.parametrize("model", ["bike-tiny-text", "bike-tiny-bidir", "bike-tiny-coca"])
def test_extract_eval_train_video_with_each_text_tower(tmp_path, sample_data, model):
    cache = tmp_path / "train.h5"
    result = runner.invoke(app, ["extract-features", "--list", str(sample_data.train), "--classes",
                                 str(sample_data.classes), "--out", str(cache), "--frames", "4", "--workers", "0",
                                 "--model", model])
    assert result.exit_code == 0, result.output
    with h5py.File(cache, "r") as h5:
        assert h5.attrs["model_name"] == model and h5.attrs["resize_mode"] == "shortest"
    result = runner.invoke(app, ["eval", "--features", str(cache), "--out", str(tmp_path / "eval"), "--head", "vcs",
                                 "--workers", "0", "--frames", "4"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["videos"] == sample_data.num_train
    result = runner.invoke(app, ["train-video", "--features", str(cache), "--out", str(tmp_path / "run"),
                                 "--epochs", "1", "--batch-size", "4", "--workers", "0", "--head", "vcs",
                                 "--temporal", "transformer", "--temporal-layers", "1", "--frames", "4"])
    assert result.exit_code == 0, result.output
    assert load_video_checkpoint(tmp_path / "run" / "last.pt").clip["model_name"] == model


def test_end_to_end_training_with_coca_whose_image_tower_returns_tokens_too(tmp_path, sample_data):
    result = runner.invoke(app, ["train-video", "--videos", str(sample_data.train), "--classes",
                                 str(sample_data.classes), "--model", "bike-tiny-coca", "--pretrained", "none",
                                 "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "4", "--frames",
                                 "2", "--workers", "0", "--head", "vcs"])
    assert result.exit_code == 0, result.output
    ckpt = load_video_checkpoint(tmp_path / "run" / "last.pt")
    assert any(k.startswith("visual.") for k in ckpt.state_dict)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None,
                    reason="transformers is installed: the message is for machines without it")
def test_missing_transformers_is_one_line_naming_the_extra_not_a_traceback(tmp_path, sample_data):
    result = subprocess.run([sys.executable, "-m", "bike_cli", "extract-features", "--list", str(sample_data.train),
                             "--classes", str(sample_data.classes), "--out", str(tmp_path / "c.h5"), "--model", "roberta-ViT-B-32", "--workers", "0"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "300"})
    assert result.returncode != 0
    assert "pip install 'bike-cli[hf]'" in result.stderr and "Traceback" not in result.stderr + result.stdout
