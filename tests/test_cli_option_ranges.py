"""Every numeric option is range-checked once, where the options become a config (`config.ranges`, called by
`config.recipe.build_config`), for every command, before the command imports its stage: a value out of range
is one line naming the option (or the recipe file, line and key), exit 1, and torch is never loaded."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from bike_cli.config import stages
from bike_cli.config.ranges import check_ranges, field_ranges
from bike_cli.config.recipe import build_config
from bike_cli.errors import InputError

BIKE = [sys.executable, "-m", "bike_cli"]
CONFIGS = [stages.ExtractConfig, stages.GenAttributesConfig, stages.TrainVideoConfig, stages.TrainAttrsConfig,
           stages.EvalConfig, stages.FuseConfig, stages.PredictConfig, stages.SearchConfig, stages.DemoConfig,
           stages.MergeConfig]
REQUIRED = {"list_path": Path("l.txt"), "out": Path("o"), "features": Path("f.h5"), "lexicon": "k400",
            "inputs": [Path("a.csv"), Path("b.csv")], "videos": [Path("v.mp4")],
            "run": Path("run"), "alpha": 0.5}

# (command line, the message): each traced back, ran on silently or was ignored before the one check
CASES = [
    (["train-video", "--weight-decay", "-0.1"], "--weight-decay must be at least 0, not -0.1"),
    (["eval", "--out", "E", "--features", "f.h5", "--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    (["train-video", "--features", "f.h5", "--shots", "0"], "--shots must be at least 1, not 0"),
    (["train-video", "--features", "f.h5", "--samples-per-epoch", "0"], "--samples-per-epoch must be at least 1, not 0"),
    (["train-video", "--lr", "0"], "--lr must be more than 0, not 0"),
    (["train-video", "--epochs", "0"], "--epochs must be at least 1, not 0"),
    (["train-video", "--tau", "-1"], "--tau must be more than 0, not -1"),
    (["train-video", "--temporal-layers", "0"], "--temporal-layers must be at least 1, not 0"),
    (["train-video", "--seed", "-1"], "--seed must be between 0 and 4294967295, not -1"),
    (["train-attrs", "--grad-accum", "0"], "--grad-accum must be at least 1, not 0"),
    (["train-attrs", "--warmup-epochs", "-1"], "--warmup-epochs must be at least 0, not -1"),
    (["train-attrs", "--clip-lr-ratio", "-0.5"], "--clip-lr-ratio must be at least 0, not -0.5"),
    (["train-attrs", "--val-every", "0"], "--val-every must be at least 1, not 0"),
    (["train-attrs", "--workers", "-1"], "--workers must be at least 0, not -1"),
    (["eval", "--out", "E", "--fuse", "1.5"], "--fuse must be in [0, 1], not 1.5"),
    (["eval", "--out", "E", "--repeats", "0"], "--repeats must be at least 1, not 0"),
    (["eval", "--out", "E", "--frames", "0"], "--frames must be between 1 and 256, not 0"),
    (["extract-features", "--list", "l", "--out", "c.h5", "--model", "bike-tiny", "--frames", "300"],
     "--frames must be between 1 and 256, not 300"),
    (["extract-features", "--list", "l", "--out", "c.h5", "--model", "bike-tiny", "--workers", "-2"],
     "--workers must be at least 0, not -2"),
    (["gen-attributes", "--features", "f.h5", "--lexicon", "k400", "--out", "a.csv", "--top-k", "0"],
     "--top-k must be at least 1, not 0"),
    (["gen-attributes", "--features", "f.h5", "--lexicon", "k400", "--out", "a.csv", "--max-elements", "0"],
     "--max-elements must be at least 1, not 0"),
    (["fuse", "a.csv", "b.csv", "--out", "f.csv", "--grid-step", "0"], "--grid-step must be in (0, 1], not 0"),
    (["fuse", "a.csv", "b.csv", "--out", "f.csv", "--grid-step", "1.5"], "--grid-step must be in (0, 1], not 1.5"),
    (["predict", "v.mp4", "--top", "0"], "--top must be at least 1, not 0"),
    (["search", "dog", "--features", "f.h5", "--top", "5", "--candidates", "3"],
     "--candidates (3) must be at least --top (5)"),
    (["demo", "--videos-per-class", "1"], "--videos-per-class must be at least 3, not 1"),
]

# Runs each command line in one interpreter, as `bike` would, and reports what it said and whether torch loaded.
PROBE = """
import contextlib, io, json, sys
from bike_cli.cli.app import main
report = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exit:
            code = exit.code
    report.append({"code": code, "stderr": err.getvalue(), "torch": "torch" in sys.modules})
print(json.dumps(report))
"""


def flat(text: str) -> str:
    return " ".join(text.split())


def test_every_numeric_option_out_of_range_is_one_line_before_torch_loads(tmp_path):
    """In-process, one fresh interpreter: every case exits 1 with its line, and none of them imported torch."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([argv for argv, _ in CASES])], cwd=tmp_path,
                          capture_output=True, text=True, env={**_env(), "COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for (argv, message), got in zip(CASES, report):
        assert got["code"] == 1, (argv, got)
        assert message in flat(got["stderr"]), (argv, got["stderr"])
        assert "Traceback" not in got["stderr"]
    assert not any(got["torch"] for got in report)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_real_command_line_with_a_bad_number_exits_1_with_one_line(tmp_path):
    done = subprocess.run([*BIKE, "train-video", "--features", "f.h5", "--weight-decay", "-0.1"], cwd=tmp_path,
                          capture_output=True, text=True, env=_env())
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --weight-decay must be at least 0, not -0.1"
    assert done.stdout == ""


def test_a_recipe_value_out_of_range_names_the_recipe_line_and_the_option(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stage: train-video\nepochs: 2\nbatch_size: 0\n")
    done = subprocess.run([*BIKE, "train-video", "--features", "f.h5", "--recipe", str(recipe)], cwd=tmp_path,
                          capture_output=True, text=True, env={**_env(), "COLUMNS": "300"})
    assert done.returncode == 1
    assert flat(done.stderr) == (f"error: {recipe}:3: batch_size must be at least 1, not 0 "
                                 "(the option --batch-size overrides it)")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("line, message", [
    ("flip_prob: 2", "flip_prob must be in [0, 1], not 2"),
    ("crop_scale_min: 0", "crop_scale_min must be in (0, 1], not 0"),
    ("grayscale_prob: -0.5", "grayscale_prob must be in [0, 1], not -0.5"),
])
def test_a_recipe_only_setting_out_of_range_names_the_recipe_line(tmp_path, line, message):
    """Settings no option sets (the augmentation's) name no option to override them."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"epochs: 2\n{line}\n")
    with pytest.raises(InputError) as caught:
        build_config(stages.TrainVideoConfig, recipe, {}, options={"epochs", "batch_size"})
    assert str(caught.value) == f"{recipe}:2: {message}"


def test_an_option_overrides_the_recipe_value_out_of_range(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("batch_size: 0\n")
    cfg = build_config(stages.TrainVideoConfig, recipe, {"batch_size": 4})
    assert cfg.batch_size == 4


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_numeric_setting_declares_its_range(cls):
    hints = typing.get_type_hints(cls)
    numbers = {f.name for f in dataclasses.fields(cls)
               if {int, float} & {hints[f.name], *typing.get_args(hints[f.name])}}
    assert numbers == set(field_ranges(cls))


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_default_is_in_its_range(cls):
    fields = {f.name for f in dataclasses.fields(cls)}
    config = cls(**{k: v for k, v in REQUIRED.items() if k in fields and _required(cls, k)})
    check_ranges(config)


def test_a_stage_called_from_python_checks_the_same_ranges(tmp_path):
    from bike_cli.stages.evaluate import run_eval

    with pytest.raises(InputError, match="^--batch-size must be at least 1, not 0$"):
        run_eval(stages.EvalConfig(out=tmp_path / "e", features=tmp_path / "f.h5", batch_size=0))
    assert not (tmp_path / "e").exists()


def _required(cls: type, name: str) -> bool:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
