"""The metrics JSON writers and reader (bike_cli.io.metrics_json): fuse's strict JSON, eval's lenient one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bike_cli.errors import InputError
from bike_cli.io.metrics_json import read_metrics_json, write_eval_metrics, write_fuse_metrics


def test_fuse_metrics_are_strict_json_with_non_finite_floats_as_null(tmp_path):
    path = write_fuse_metrics(tmp_path / "f.metrics.json", {"a": math.nan, "b": [1.5, math.inf, (2, -math.inf)],
                                                            "c": {"d": np.float64("nan"), "e": "x"}})
    text = path.read_text()
    assert text.endswith("}\n")
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the metrics JSON"))
    assert doc == {"a": None, "b": [1.5, None, [2, None]], "c": {"d": None, "e": "x"}}
    assert read_metrics_json(path) == doc


def test_eval_metrics_write_numpy_values_and_paths(tmp_path):
    document = {"videos": np.int64(3), "top1": np.float32(50.0), "scores": np.array([[1, 2]]),
                "config": {"out": Path("runs/e"), "templates": ("{}",)}}
    path = write_eval_metrics(tmp_path / "metrics.json", document)
    assert not path.read_text().endswith("\n")
    assert read_metrics_json(path) == {"videos": 3, "top1": 50.0, "scores": [[1, 2]],
                                       "config": {"out": "runs/e", "templates": ["{}"]}}


def test_reading_what_is_not_a_metrics_json_names_the_file(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "torn.json").write_text('{"a": ')
    for name in ("list.json", "torn.json", "absent.json"):
        with pytest.raises(InputError, match=name):
            read_metrics_json(tmp_path / name)
