"""The metrics JSON files (docs/formats.md): `bike eval`'s `DIR/metrics.json`, `bike fuse`'s `F.metrics.json`.

Both are strict JSON (any JSON reader takes them) with a `kind` and a `schema_version`, written
atomically with a final newline. Values are made plain on the way out: NumPy numbers and arrays
become JSON numbers and lists, a non-finite float (NaN, inf: a metric with nothing to measure) is
null, Paths and any other object are written as their text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bike_cli.errors import InputError
from bike_cli.io.atomic import write_text

EVAL_METRICS_KIND = "bike-eval-metrics"  # the `kind` of eval's metrics.json
FUSE_METRICS_KIND = "bike-fuse-metrics"  # the `kind` of a fuse metrics JSON
METRICS_SCHEMA_VERSION = 1


def write_metrics_json(path: Path, document: dict, kind: str) -> Path:
    """Write a metrics JSON atomically: `kind` and `schema_version` first, then `document`, made plain."""
    header = {"kind": kind, "schema_version": METRICS_SCHEMA_VERSION}
    text = json.dumps(_plain({**header, **document}), indent=2, allow_nan=False)
    return write_text(path, text + "\n")


def write_fuse_metrics(path: Path, document: dict) -> Path:
    """Write `bike fuse`'s metrics JSON (see `write_metrics_json`)."""
    return write_metrics_json(path, document, FUSE_METRICS_KIND)


def write_eval_metrics(path: Path, document: dict) -> Path:
    """Write `bike eval`'s metrics.json (see `write_metrics_json`)."""
    return write_metrics_json(path, document, EVAL_METRICS_KIND)


def read_metrics_json(path: Path) -> dict:
    """Either metrics JSON as a dict; InputError if it is not a readable JSON object."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path} is not a readable metrics JSON: {err}") from None
    if not isinstance(document, dict):
        raise InputError(f"{path} is not a metrics JSON (not a JSON object)")
    return document


def _plain(value: Any) -> Any:
    """`value` as JSON's types: dicts with text keys, lists, finite numbers or None, text, booleans."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return _plain(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
