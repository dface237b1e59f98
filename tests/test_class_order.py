"""A class file holding the cache's names in another order: labels are mapped by name (issue 19.1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bike_cli.config.train_video import TrainVideoConfig
from bike_cli.data.lists.classes import read_class_names
from bike_cli.errors import InputError
from bike_cli.stages.train_video import run_train_video

ROOT = Path(__file__).resolve().parents[1]


def _eval(out: Path, run: Path, cache: Path, classes: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bike_cli", "eval", "--checkpoint", str(run), "--features",
                           str(cache), "--classes", str(classes), "--out", str(out), "--workers", "0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads((out / "metrics.json").read_text())["metrics"]["video"]


def test_eval_metrics_do_not_depend_on_the_class_file_order(tmp_path, motion_caches):
    data, train, val = motion_caches
    run = tmp_path / "run"
    run_train_video(TrainVideoConfig(features=train, out=run, epochs=2, batch_size=8, lr=2e-3, warmup_epochs=1,
                                     workers=0, templates=["{}"], temporal_layers=1))
    names = read_class_names(data.classes)
    reordered = tmp_path / "reordered.txt"
    reordered.write_text("\n".join(reversed(names)) + "\n")
    original = _eval(tmp_path / "a", run, val, data.classes)
    shuffled = _eval(tmp_path / "b", run, val, reordered)
    numbers = {k: v for k, v in original.items() if isinstance(v, (int, float))}
    assert numbers
    for key, value in numbers.items():
        np.testing.assert_allclose(shuffled[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_label_order_maps_by_name_and_refuses_a_missing_name():
    from bike_cli.data.lists.classes import label_order, relabel

    assert label_order(["a", "b"], ["a", "b"], "f", "c") is None
    assert label_order(["a", "b"], [], "f", "c") is None
    order = label_order(["b", "c", "a"], ["a", "b", "c"], "f", "c")
    assert order == [2, 0, 1]
    np.testing.assert_array_equal(relabel(np.array([0, 1, 2, -1]), order, 3), [2, 0, 1, -1])
    np.testing.assert_array_equal(relabel(np.array([[1, 0, 1]]), order, 3), [[0, 1, 1]])
    with pytest.raises(InputError, match="lacks the class 'c'"):
        label_order(["a", "b"], ["a", "b", "c"], "f", "c")
