"""The metrics JSON files (docs/formats.md): `bike eval`'s `DIR/metrics.json`, `bike fuse`'s `F.metrics.json`.

The two are encoded as they always were, which differs:
- fuse: strict JSON; a non-finite float (NaN, inf) is written as null; NumPy values and other
  objects are refused (TypeError: the stage gives Python numbers); a final newline.
- eval: NumPy numbers and arrays as JSON numbers and lists, Paths and any other object as their
  text; a NaN float is written as `NaN` (Python's json default, not strict JSON); no final newline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bike_cli.errors import InputError
from bike_cli.io.atomic import write_text

FUSE_METRICS_KIND = "bike-fuse-metrics"  # the `kind` of a fuse metrics JSON


def write_fuse_metrics(path: Path, document: dict) -> Path:
    """Write `bike fuse`'s metrics JSON atomically (non-finite floats as null)."""
    return write_text(path, json.dumps(_json_safe(document), indent=2) + "\n")


def write_eval_metrics(path: Path, document: dict) -> Path:
    """Write `bike eval`'s metrics.json atomically (NumPy values as JSON, other objects as text)."""
    return write_text(path, json.dumps(document, indent=2, default=_json_default))


def read_metrics_json(path: Path) -> dict:
    """Either metrics JSON as a dict; InputError if it is not a readable JSON object."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path} is not a readable metrics JSON: {err}") from None
    if not isinstance(document, dict):
        raise InputError(f"{path} is not a metrics JSON (not a JSON object)")
    return document


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    """What json.dumps writes for an object it cannot encode itself (never a Python float)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
