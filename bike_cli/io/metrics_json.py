"""The metrics JSON files (docs/formats.md): eval's and fuse's metrics JSON and a run's `metrics.jsonl`,
all strict JSON (values made plain: NumPy to numbers and lists, a non-finite float to null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bike_cli.io.atomic import append_line, write_text

EVAL_METRICS_KIND = "bike-eval-metrics"  # the `kind` of eval's metrics.json
FUSE_METRICS_KIND = "bike-fuse-metrics"  # the `kind` of a fuse metrics JSON
METRICS_SCHEMA_VERSION = 1


def write_metrics_json(path: Path, document: dict, kind: str) -> Path:
    """Write a metrics JSON atomically: `kind` and `schema_version` first, then `document`, made plain."""
    header = {"kind": kind, "schema_version": METRICS_SCHEMA_VERSION}
    text = json.dumps(_plain({**header, **document}), indent=2, allow_nan=False)
    return write_text(path, text + "\n")


def metrics_line(record: dict) -> str:
    """One line of `metrics.jsonl`: `record` made plain, as strict JSON (no newline)."""
    return json.dumps(_plain(record), allow_nan=False)


def append_metrics_line(path: Path, record: dict) -> None:
    """Append `record` to a `metrics.jsonl` as one strict-JSON line (fsync'ed)."""
    append_line(path, metrics_line(record))


def write_metrics_lines(path: Path, records: list[dict]) -> Path:
    """Write a whole `metrics.jsonl` atomically: one strict-JSON line per record."""
    return write_text(path, "".join(metrics_line(record) + "\n" for record in records))


def read_metrics_lines(path: Path) -> tuple[list[dict], int]:
    """The records of a `metrics.jsonl` and how many lines were not one (a torn last line, a stray text)."""
    records, dropped = [], 0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            dropped += 1
    return records, dropped


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
