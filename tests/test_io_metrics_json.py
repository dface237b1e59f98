"""The metrics JSON writers (bike_cli.io.metrics_json): both strict JSON with a kind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bike_cli.io.metrics_json import EVAL_METRICS_KIND, FUSE_METRICS_KIND, write_metrics_json


def _strict(text: str) -> dict:
    """`text` parsed as strict JSON: NaN, Infinity and -Infinity fail the test."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the metrics JSON"))


@pytest.mark.parametrize("written, kind", [(FUSE_METRICS_KIND, "bike-fuse-metrics"),
                                           (EVAL_METRICS_KIND, "bike-eval-metrics")])
def test_metrics_json_is_strict_json_with_a_kind_and_non_finite_floats_as_null(tmp_path, written, kind):
    path = write_metrics_json(tmp_path / "metrics.json", {"a": math.nan, "b": [1.5, math.inf, (2, -math.inf)],
                              "c": {"d": np.float64("nan"), "e": "x", "f": np.float32(-np.inf)}}, written)
    text = path.read_text()
    assert text.endswith("}\n")
    doc = _strict(text)
    assert doc == {"kind": kind, "schema_version": 1, "a": None, "b": [1.5, None, [2, None]],
                   "c": {"d": None, "e": "x", "f": None}}


def test_eval_metrics_write_numpy_values_and_paths(tmp_path):
    document = {"videos": np.int64(3), "top1": np.float32(50.0), "scores": np.array([[1, 2], [3, np.nan]]),
                "ok": np.bool_(True), "config": {"out": Path("runs/e"), "templates": ("{}",), "seed": None}}
    path = write_metrics_json(tmp_path / "metrics.json", document, EVAL_METRICS_KIND)
    assert _strict(path.read_text()) == {"kind": "bike-eval-metrics", "schema_version": 1, "videos": 3,
                                         "top1": 50.0, "scores": [[1.0, 2.0], [3.0, None]], "ok": True,
                                         "config": {"out": "runs/e", "templates": ["{}"], "seed": None}}

