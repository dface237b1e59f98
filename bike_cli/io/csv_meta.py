"""The metadata sidecar of bike's CSV outputs (score CSVs, attributes CSVs): `FILE.csv.meta.json`.

    {"kind": "bike-csv-meta", "schema_version": 1, "compat": "bike" | "authors", "scores": RULE,
     "class_names": [NAME, ...]}

`scores` (optional; absent in files from before it) names the rule that made a score CSV's numbers
from a branch's logits: `bike-softmax`, `authors-test`, `authors-validate`, `cosine` or `fused`
(bike_cli.config.profile); a hits CSV of `bike search` has `search-vcs` or `search-mean`
(bike_cli.io.hits_csv). `class_names` (optional) are the classes an attributes CSV's label indices
number, in index order (a score CSV names its classes in its columns).

The CSV layouts themselves stay plain tables (docs/formats.md); what made a file that its columns
cannot say lives beside it. A CSV without a sidecar (hand-written, or from before sidecars) reads as
made under the `bike` profile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bike_cli.config.profile import recorded_profile
from bike_cli.errors import InputError
from bike_cli.io.atomic import write_text

KIND = "bike-csv-meta"
SCHEMA_VERSION = 1


def meta_path(csv_path: str | Path) -> Path:
    path = Path(csv_path)
    return path.with_name(path.name + ".meta.json")


@dataclass(frozen=True)
class CsvMeta:
    compat: str  # the profile that made the file
    scores: str | None = None  # the score rule of a score CSV; None: not recorded
    class_names: tuple[str, ...] = ()  # what the label indices of an attributes CSV number; (): not recorded


def write_csv_meta(csv_path: str | Path, compat: str, scores: str | None = None,
                   class_names: tuple[str, ...] | list[str] = ()) -> Path:
    """Write the sidecar of `csv_path` atomically."""
    document = {"kind": KIND, "schema_version": SCHEMA_VERSION, "compat": compat}
    if scores is not None:
        document["scores"] = scores
    if class_names:
        document["class_names"] = list(class_names)
    return write_text(meta_path(csv_path), json.dumps(document) + "\n")


def read_csv_compat(csv_path: str | Path) -> str:
    """The profile that made `csv_path` (`bike` without a sidecar)."""
    return read_csv_meta(csv_path).compat


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
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path} has sidecar schema {data.get('schema_version')}; bike reads {SCHEMA_VERSION}")
    scores, names = data.get("scores"), data.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{path}: 'class_names' must be a list of strings")
    return CsvMeta(recorded_profile(data.get("compat")), str(scores) if scores else None, tuple(names))
