"""The shell itself: help without torch, commands in stage order, shared options and their defaults."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperOption
from typer.testing import CliRunner

from bike_cli.cli.app import COMMANDS, app

runner = CliRunner()
STAGE_ORDER = ["extract-features", "gen-attributes", "train-video", "train-attrs", "merge", "eval", "fuse", "predict", "search", "demo"]
HEAVY = ("torch", "open_clip", "torchvision")


def test_help_of_every_command_leaves_torch_unloaded():
    script = (
        "import sys\n"
        "from bike_cli.cli.app import main\n"
        "for args in ([], ['--version'], *([c, '--help'] for c in sys.argv[1:]), ['fuse', '--bad-option']):\n"
        "    try:\n"
        "        main(['--help'] if not args else args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *STAGE_ORDER], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "100"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert done.stdout.count("Usage: bike") >= len(STAGE_ORDER) + 1  # every help really printed


def test_commands_are_listed_in_stage_order():
    assert [name for name, _ in COMMANDS] == STAGE_ORDER
    output = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    positions = [output.index(f" {name} ") for name in STAGE_ORDER]
    assert positions == sorted(positions)


def test_core_imports_no_command():
    core = importlib.import_module("bike_cli.cli.core")
    tree = ast.parse(Path(core.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    commands = {command.__module__ for _, command in COMMANDS}
    assert not imported & (commands | {"bike_cli.cli.app", "bike_cli.cli"})


def _defaults(config: type) -> dict:
    """`{field: default}` of a settings dataclass, for the fields that have one."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(config)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


@pytest.mark.parametrize("name, command", COMMANDS)
def test_help_shows_the_settings_dataclass_defaults(name, command):
    config = command.bike_config
    assert dataclasses.is_dataclass(config) and config.__module__ == "bike_cli.config.stages"  # torch-free home
    defaults = _defaults(config)
    click_command = typer.main.get_command(app).commands[name]
    output = " ".join(runner.invoke(app, [name, "--help"], env={"COLUMNS": "300"}).output.split())
    if "batch_size" in defaults and name not in ("train-video", "train-attrs"):
        assert f"[default: {defaults['batch_size']}]" in output
    shown = {p.name: p.default for p in click_command.params if isinstance(p, TyperOption)}
    for field, value in defaults.items():  # an option left as None shows the dataclass's default
        leaves_it_to_the_dataclass = shown.get(field, 0) is None and field not in command.bike_none_means
        if leaves_it_to_the_dataclass and value not in (None, []) and value is not False:
            assert f"[default: {value if not isinstance(value, list) else ', '.join(value)}]" in output, field


def test_training_block_is_the_same_on_both_training_commands():
    outputs = [runner.invoke(app, [c, "--help"], env={"COLUMNS": "300"}).output for c in ("train-video", "train-attrs")]
    for flag in ("--epochs", "--lr", "--warmup-epochs", "--resume", "--overwrite", "--device", "--batch-size"):
        lines = [next(line for line in out.splitlines() if f" {flag} " in line) for out in outputs]
        helps = [" ".join(line.split(flag, 1)[1].split("[default")[0].split()) for line in lines]
        assert helps[0] == helps[1], flag
    assert "[default: 2]" in outputs[0].split("--workers", 1)[1].splitlines()[0]  # TrainVideoConfig.workers
    assert "[default: 0]" in outputs[1].split("--workers", 1)[1].splitlines()[0]  # TrainAttrsConfig.workers


@pytest.mark.parametrize("name", ["--help", *STAGE_ORDER])
def test_help_is_grouped_in_panels_and_flags_show_no_value(name):
    args = [name] if name == "--help" else [name, "--help"]
    output = runner.invoke(app, args, env={"COLUMNS": "200"}).output
    assert "<bool>" not in output
    if name != "--help":
        panels = [p for p in ("Input", "Model", "Sampling", "Training", "Output", "Performance") if f"─ {p} " in output]
        assert len(panels) >= 2
        assert [output.index(f"─ {p} ") for p in panels] == sorted(output.index(f"─ {p} ") for p in panels)


def test_every_computing_command_has_device():
    for name in ("extract-features", "gen-attributes", "train-video", "train-attrs", "eval", "predict"):
        assert "--device" in runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output, name


def test_quiet_after_the_command(tmp_path, motion_caches):
    _, train, _ = motion_caches
    args = [sys.executable, "-m", "bike_cli", "gen-attributes", "--features", str(train), "--lexicon", "hmdb51"]
    talkative = subprocess.run([*args, "--out", str(tmp_path / "a.csv")], capture_output=True, text=True)
    quiet = subprocess.run([*args, "--out", str(tmp_path / "b.csv"), "-q"], capture_output=True, text=True)
    assert talkative.returncode == quiet.returncode == 0, quiet.stderr
    assert "Loaded bike-tiny" in " ".join(talkative.stderr.split())
    assert "Loaded bike-tiny" not in " ".join(quiet.stderr.split())
