"""A torch and a torchvision that do not belong together: one line with both versions and the command
that fixes it, exit 1, before torch loads; help and version still answer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer

from bike_cli.cli.app import COMMANDS, CheckedCommand, app
from bike_cli.cli.torch_pair import (
    KNOWN_TORCH_MINORS,
    PYTORCH_INDEX,
    TORCH_CAP,
    fix_command,
    installed_mismatch,
    mismatch,
    pair_install_args,
)

ROOT = Path(__file__).resolve().parents[1]


def _fake_dist(folder: Path, name: str, version: str, record: str = "") -> None:
    """A dist-info folder that importlib.metadata reads as an installed `name` `version`."""
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(record)


def _bike(args: list[str], first_on_path: Path) -> subprocess.CompletedProcess:
    """`python -m bike_cli ARGS` with `first_on_path` ahead of every installed package."""
    path = os.pathsep.join([str(first_on_path), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "bike_cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, "COLUMNS": "400"}, cwd=first_on_path)


def test_a_torchvision_built_for_another_torch_is_one_line_with_the_fix_before_torch_loads(tmp_path):
    _fake_dist(tmp_path, "torchvision", "0.20.0")  # built for torch 2.5
    torch_version = metadata.version("torch")
    done = _bike(["fuse", "a.csv", "b.csv", "--out", "fused.csv"], tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"error: torch {torch_version} and torchvision 0.20.0 do not belong together")
    assert "do not belong together (torch 2." in lines[0]  # the reason: the torchvision this torch needs
    assert f"{sys.executable} -m pip install --force-reinstall" in lines[0]
    assert not (tmp_path / "fused.csv").exists() and done.stdout == ""


def test_a_cpu_torch_beside_pypis_cuda_torchvision_is_named_with_the_cpu_index_fix(tmp_path):
    # The install: torch 2.13.0+cpu from PyTorch's CPU index, torchvision 0.28.0 from PyPI (a CUDA build)
    _fake_dist(tmp_path, "torch", "2.13.0+cpu")
    _fake_dist(tmp_path, "torchvision", "0.28.0", "torchvision.libs/libcudart.faf08d9a.so.13,sha256=x,704288\n")
    done = _bike(["demo", "--out", str(tmp_path / "demo")], tmp_path)
    assert done.returncode == 1, done.stderr
    line = " ".join(done.stderr.split())
    assert "torch 2.13.0+cpu and torchvision 0.28.0 do not belong together" in line
    assert "CPU-only build, torchvision a CUDA build" in line
    assert (f"-m pip install --force-reinstall --extra-index-url {PYTORCH_INDEX}/cpu --timeout 5 --retries 0 "
            "'torch<=2.14.1' torchvision") in line
    assert not (tmp_path / "demo").exists()


def test_help_and_version_answer_beside_a_mismatched_pair(tmp_path):
    _fake_dist(tmp_path, "torchvision", "0.20.0")
    for args in (["--help"], ["--version"], ["demo", "--help"], ["fuse", "--help"]):
        done = _bike(args, tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert "do not belong together" not in done.stdout + done.stderr


def test_every_command_checks_the_pair_before_it_runs():
    commands = typer.main.get_command(app).commands
    assert {name for name, _ in COMMANDS} == set(commands)
    assert all(isinstance(command, CheckedCommand) for command in commands.values())


def test_the_installed_pair_belongs_together():
    assert installed_mismatch() is None


@pytest.mark.parametrize("torch_version, vision_version", [
    ("2.14.1", "0.29.1"), ("2.14.1+cpu", "0.29.1+cpu"), ("2.14.0", "0.29.1"), ("2.0.1", "0.15.2"),
    ("2.1.2+cu121", "0.16.2+cu121"),
    ("2.15.0", "0.30.0"), ("3.0.0", "0.31.0"),  # newer than every known pair: bike cannot tell
    ("2.14.0a0+git1234", "0.29.0a0+abcdef"),  # source builds: their labels are not build kinds
    ("2.14.1+cpu", "0.29.1"),  # an unlabelled torchvision without CUDA's runtime (e.g. Windows' PyPI wheel)
    ("2.14.1", "0.29.1+cpu"),  # a CPU torchvision runs in a CUDA torch (on the CPU)
    ("1.13.1", "0.14.1"),
])
def test_pairs_that_belong_together_or_cannot_be_told_say_nothing(torch_version, vision_version):
    assert mismatch(torch_version, vision_version) is None


@pytest.mark.parametrize("torch_version, vision_version, ships_cuda, reason", [
    ("2.14.1", "0.28.0", False, "torch 2.14 needs torchvision 0.29"),
    ("2.13.0+cpu", "0.29.1+cpu", False, "torch 2.13 needs torchvision 0.28"),
    ("2.15.0", "0.29.1", False, "torchvision 0.29 is built for torch 2.14"),
    ("2.14.1", "0.30.0", False, "torch 2.14 needs torchvision 0.29"),
    ("2.14.1+cu121", "0.29.1+cu124", False, "one is a +cu121 build, the other a +cu124 build"),
    ("2.14.1+cpu", "0.29.1+cu130", False, "one is a +cpu build, the other a +cu130 build"),
    ("2.13.0+cpu", "0.28.0", True, "torch is a CPU-only build, torchvision a CUDA build"),
])
def test_pairs_that_do_not_belong_together_say_why(torch_version, vision_version, ships_cuda, reason):
    assert mismatch(torch_version, vision_version, ships_cuda) == reason


def test_the_fix_installs_both_from_one_place():
    pip = f"{sys.executable} -m pip install --force-reinstall"
    assert fix_command("2.14.1") == f"{pip} --no-deps 'torchvision==0.29.*'"  # PyPI's torch stays
    # a CPU torch: both from the CPU index where it answers, both from PyPI where it does not
    assert fix_command("2.13.0+cpu") == (f"{pip} --extra-index-url {PYTORCH_INDEX}/cpu --timeout 5 --retries 0 "
                                         "'torch<=2.14.1' torchvision")
    assert fix_command("2.1.2+cu121") == f"{pip} {pair_install_args('cu121')}"
    assert fix_command("2.15.0") == f"{pip} 'torch<=2.14.1' torchvision"  # newer than bike supports


def test_the_known_pairs_end_at_the_torch_bike_is_capped_at():
    cap = re.search(r'"torch>=[\d.]+,<=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert TORCH_CAP == cap
    assert f"2.{KNOWN_TORCH_MINORS[-1]}." in f"{cap}."
