"""A built wheel installs a working `bike` with its built-in lexicons and model configs, used from a
folder outside the checkout (offline: the wheel is built with the installed setuptools)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("bike_cli", "lexicons", "pyproject.toml", "setup.py", "README.md")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bike's wheel, built from a copy of the sources and installed without dependencies into a folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:  # a copy: building writes build/ and *.egg-info beside the sources
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (REPO / name).is_dir() else {}))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(work / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "dist").glob("bike_cli-*.whl")
    target = work / "site"
    done = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "COLUMNS": "200"}  # the wheel's bike_cli, not the checkout's
    return subprocess.run([str(target / "bin" / "bike"), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_wheel_carries_lexicons_and_model_configs(installed):
    assert (installed / "bike_cli" / "lexicons" / "k400.txt").read_text() == (REPO / "lexicons" / "k400.txt").read_text()
    assert (installed / "bike_cli" / "models" / "configs" / "bike-tiny.json").is_file()
    assert not (installed / "lexicons").exists()  # inside the package, not a top-level folder


@pytest.mark.slow
@pytest.mark.parametrize("lexicon, phrases", [("k400", 400), ("imagenet1k", 998)])
def test_installed_wheel_runs_gen_attributes_from_any_folder(installed, motion_caches, tmp_path, lexicon, phrases):
    _, train, _ = motion_caches
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([sys.executable, "-c", "import bike_cli; print(bike_cli.__file__)"], capture_output=True,
                           text=True, cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(installed)})
    assert Path(where.stdout.strip()).is_relative_to(installed)
    done = run_installed(installed, elsewhere, "gen-attributes", "--features", str(train), "--lexicon", lexicon,
                         "--out", "attrs.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{phrases} phrases" in done.stderr
    assert (elsewhere / "attrs.csv").read_text().startswith("video_id,label,attr_1")
