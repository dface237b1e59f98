"""The sidecar of bike's CSV outputs, `FILE.csv.meta.json` (schema 2, fields: docs/formats.md): what made a
file that its columns cannot say. Schema 1 (no `model`) is still read; no sidecar reads as `bike`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bike_cli.config.profile import recorded_profile
from bike_cli.errors import InputError
from bike_cli.io.atomic import write_text
from bike_cli.io.identity import RECORD_TYPES

KIND = "bike-csv-meta"
SCHEMA_VERSION = 2
READS = (1, 2)  # schema 1: no `model`


def meta_path(csv_path: str | Path) -> Path:
    path = Path(csv_path)
    return path.with_name(path.name + ".meta.json")


@dataclass(frozen=True)
class CsvMeta:
    compat: str  # the profile that made the file
    scores: str | None = None  # the score rule of a score CSV; None: not recorded
    model: dict | None = None  # the identity of the CLIP that generated the file; None: not recorded
    class_names: tuple[str, ...] = ()  # what the label indices of an attributes CSV number; (): not recorded


def write_csv_meta(csv_path: str | Path, compat: str, scores: str | None = None, model: dict | None = None,
                   class_names: tuple[str, ...] | list[str] = ()) -> Path:
    """Write the sidecar of `csv_path` atomically (`model`: an `identity_record`)."""
    document = {"kind": KIND, "schema_version": SCHEMA_VERSION, "compat": compat}
    if scores is not None:
        document["scores"] = scores
    if model is not None:
        document["model"] = model
    if class_names:
        document["class_names"] = list(class_names)
    return write_text(meta_path(csv_path), json.dumps(document) + "\n")


def read_csv_meta(csv_path: str | Path) -> CsvMeta:
    """The sidecar of `csv_path` (the `bike` profile and no score rule without one)."""
    path = meta_path(csv_path)
    if not path.is_file():
        return CsvMeta(recorded_profile(None))
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is not a readable bike CSV sidecar: {err}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise InputError(f"{path} is not a bike CSV sidecar (no kind={KIND!r})")
    if data.get("schema_version") not in READS:
        raise InputError(f"{path} has sidecar schema {data.get('schema_version')}; bike reads "
                         f"{' and '.join(map(str, READS))}")
    scores, names = data.get("scores"), data.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{path}: 'class_names' must be a list of strings")
    return CsvMeta(recorded_profile(data.get("compat")), str(scores) if scores else None,
                   _model(data.get("model"), path), tuple(names))


def _model(record: object, path: Path) -> dict | None:
    """The `model` of a sidecar, every field of the type it has (InputError naming the first that is not)."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise InputError(f"{path}: `model` is not a record of a model (it holds a {type(record).__name__})")
    for key, types in RECORD_TYPES.items():
        value = record.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InputError(f"{path}: `model.{key}` is {value!r}, not a {' or '.join(t.__name__ for t in types)}")
    return {key: record[key] for key in RECORD_TYPES}
