"""The failures CSV of `bike extract-features` (one row per video that produced no features), also
written as a run folder's `val_failures.csv` by `train-video --val-videos`.

Columns: `video_id,path,reason` (reason starts with a short class: "file not found", "no video
stream", "zero frames", "corrupt"...). Rows follow the order of the video list. The file is written
anew at the end of every run (header only when nothing failed), so it never lists stale failures.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from bike_cli.io.atomic import atomic_write
from bike_cli.io.feature_cache_parts import Failure

COLUMNS = ("video_id", "path", "reason")


def write_failures_csv(path: Path, failures: Iterable[Failure]) -> Path:
    """Write the failures (sorted by list position) atomically to `path`."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for f in sorted(failures, key=lambda f: f.list_index):
            writer.writerow([f.video_id, f.path, f.reason])
    return path
