"""The `bike` command: CliRunner for options and errors, real subprocesses where users would use them
(a SIGKILL mid-run and its resume, a two-process `accelerate launch` run)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import ExtractConfig
from bike_cli.io.feature_cache import FeatureCache, parts_dir_for, scan_parts
from bike_cli.stages.extract import run_extraction

runner = CliRunner()
BIKE = [sys.executable, "-m", "bike_cli"]


def assert_same_embeddings(got: np.ndarray, expected: np.ndarray) -> None:
    """float16 cache rows of the same videos computed in other batches: float32 round-off can move a value
    across an fp16 rounding boundary, one fp16 step (2**-10 relative) at most."""
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), rtol=2**-10, atol=1e-6)


def extract_args(data, out: Path, *extra: str) -> list[str]:
    return ["extract-features", "--list", str(data.train), "--classes", str(data.classes), "--out", str(out),
            "--frames", "4", "--workers", "0", "--model", "bike-tiny", *extra]


def test_help_lists_the_working_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "extract-features" in result.output and "demo" in result.output


def test_extract_features_help_explains_every_option():
    result = runner.invoke(app, ["extract-features", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--list", "--root", "--classes", "--model", "--pretrained", "--frames", "--views",
                   "--out", "--failures", "--decoder", "--batch-size", "--workers", "--strict",
                   "--overwrite", "--sampling", "--seed", "--precision", "--quick-gelu"):
        assert option in result.output, option


def test_extract_features_writes_a_cache(tmp_path, sample_data):
    result = runner.invoke(app, extract_args(sample_data, tmp_path / "c.h5", "--views", "1x3"))
    assert result.exit_code == 0, result.output
    cache = FeatureCache(tmp_path / "c.h5")
    assert len(cache) == len(pd.read_csv(sample_data.train))
    assert cache.embeddings(0).shape == (3, 4, 64)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--views", "4x2"], "spatial crops must be 1 or 3"),
        (["--decoder", "opencv"], "'opencv' is not one of decord, pyav"),
        (["--model", "ViT-Q-99"], "ViT-Q-99"),
        (["--pretrained", "nowhere/weights.pt"], "nowhere/weights.pt"),
        (["--frames", "0"], "--frames must be between 1 and 256, not 0"),
        (["--frames", "100000"], "--frames must be between 1 and 256, not 100000"),
        (["--views", "1000000x1"], "at most 64 temporal clips"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path, sample_data, extra, message):
    result = runner.invoke(app, extract_args(sample_data, tmp_path / "c.h5", *extra))
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "c.h5").exists()


def test_bad_list_line_names_file_and_line(tmp_path, sample_data):
    listing = tmp_path / "bad.csv"
    listing.write_text("path,label\nvideos/a.mp4,square moving right\nvideos/b.mp4,triangle dancing\n")
    result = runner.invoke(app, ["extract-features", "--list", str(listing), "--classes",
                                 str(sample_data.classes), "--out", str(tmp_path / "c.h5"), "--model", "bike-tiny"])
    assert result.exit_code == 1
    assert f"{listing}:3" in " ".join(result.output.split()) and "triangle dancing" in result.output


def test_strict_exits_1_when_a_video_fails(tmp_path, sample_data):
    listing = tmp_path / "l.csv"
    rows = pd.read_csv(sample_data.train).head(2)
    rows.loc[len(rows)] = ["videos/not_there.mp4", rows.label[0]]
    rows["path"] = [str(sample_data.root / p) for p in rows.path]
    rows.to_csv(listing, index=False)
    args = ["extract-features", "--list", str(listing), "--classes", str(sample_data.classes), "--frames", "4",
            "--workers", "0", "--model", "bike-tiny"]
    lenient = runner.invoke(app, [*args, "--out", str(tmp_path / "a.h5")])
    assert lenient.exit_code == 0
    strict = runner.invoke(app, [*args, "--out", str(tmp_path / "b.h5"), "--strict"])
    assert strict.exit_code == 1
    assert len(FeatureCache(tmp_path / "b.h5")) == 2  # the good videos are kept even under --strict


@pytest.mark.slow
def test_real_bike_subprocess_and_python_m(tmp_path, sample_data):
    exe = shutil.which("bike", path=str(Path(sys.executable).parent))
    assert exe, "the bike console script is installed beside the interpreter"
    done = subprocess.run([exe, "-q", *extract_args(sample_data, tmp_path / "c.h5")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = subprocess.run([*BIKE, *extract_args(sample_data, tmp_path / "c.h5")], capture_output=True, text=True)
    assert again.returncode == 0 and "already cached" in again.stderr
    bad = subprocess.run([*BIKE, *extract_args(sample_data, tmp_path / "c.h5", "--frames", "6")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "frames: existing 4 vs now 6" in " ".join(bad.stderr.split())


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    from bike_cli.data.synthetic import make_sample_dataset

    return make_sample_dataset(tmp_path_factory.mktemp("kill"), videos_per_class=10, num_frames=48,
                               size=(96, 128), val_fraction=0.0, seed=3)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path, slow_data):
    out = tmp_path / "killed.h5"
    args = extract_args(slow_data, out, "--frames", "16", "--views", "2x3", "--batch-size", "1")
    proc = subprocess.Popen([*BIKE, "-q", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = parts_dir_for(out)
    deadline = time.monotonic() + 60
    while not list(parts.glob("*.h5")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "killed before the final merge"
    done_before = len(scan_parts(parts).done_ids)
    assert 1 <= done_before < 40
    common = dict(list_path=slow_data.train, classes=slow_data.classes, frames=16, views="2x3", workers=0)
    resumed = run_extraction(ExtractConfig(out=out, **common))
    assert resumed.already_done == done_before and resumed.extracted == 40 - done_before
    fresh = tmp_path / "fresh.h5"
    run_extraction(ExtractConfig(out=fresh, **common))
    with h5py.File(out, "r") as a, h5py.File(fresh, "r") as b:
        assert list(a["video_ids"].asstr()[()]) == list(b["video_ids"].asstr()[()])
        assert_same_embeddings(a["embeddings"][()], b["embeddings"][()])  # other batches: round-off only
        np.testing.assert_array_equal(a["labels"][()], b["labels"][()])


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, sample_data):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate's launcher is installed beside the interpreter"
    two = tmp_path / "two.h5"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    launched = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bike_cli",
         *extract_args(sample_data, two, "--views", "2x1", "--batch-size", "2")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "on process 0 of 2" in " ".join(launched.stderr.split())  # really two processes, not two runs of one
    one = tmp_path / "one.h5"
    run_extraction(ExtractConfig(list_path=sample_data.train, classes=sample_data.classes, out=one, frames=4,
                                 views="2x1", workers=0))
    with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
        assert list(a["video_ids"].asstr()[()]) == list(b["video_ids"].asstr()[()])
        assert_same_embeddings(a["embeddings"][()], b["embeddings"][()])  # batches of 2 per process: round-off
        assert dict(a.attrs) == dict(b.attrs)
