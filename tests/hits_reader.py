"""Reading a hits CSV of `bike search` back, and its sidecar (for the tests: bike itself never reads one)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bike_cli.errors import InputError, location
from bike_cli.io.csv_meta import read_csv_meta
from bike_cli.io.file_kind import not_text
from bike_cli.io.search_index import HITS_COLUMNS, SCORE_RULES, Hit

SCHEMA_VERSION = 1


@dataclass
class HitsTable:
    hits: list[Hit]
    compat: str  # the profile of the cache searched
    rule: str | None  # "vcs" | "mean" (None: no sidecar)


def read_hits_csv(path: str | Path) -> HitsTable:
    """Read a hits CSV and its sidecar; errors name the file and line."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"hits CSV {'is not a file' if source.exists() else 'not found'}: {source}")
    meta = read_csv_meta(source)
    rules = {v: k for k, v in SCORE_RULES.items()}
    if meta.scores is not None and meta.scores not in rules:
        raise InputError(f"{source}: its sidecar's scores {meta.scores!r} are not a search rule "
                         f"({', '.join(rules)}): not a hits CSV")
    try:
        with open(source, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as e:
        raise not_text(source, "hits CSV", e) from None
    except csv.Error as e:  # a cell over the csv module's 128 KiB field limit
        raise InputError(f"{source}: malformed hits CSV ({e})") from None
    if not rows or tuple(rows[0]) != HITS_COLUMNS:
        raise InputError(f"{location(source, 1)}: expected the header {','.join(HITS_COLUMNS)!r} (hits CSV schema "
                         f"{SCHEMA_VERSION}), got {','.join(rows[0]) if rows else ''!r}")
    hits = []
    for line, row in enumerate(rows[1:], 2):
        try:
            query, rank, video_id, video_path, score, step, frame = row
            hits.append(Hit(query, int(rank), video_id, video_path, float(score), int(step), int(frame)))
        except ValueError:
            raise InputError(f"{location(source, line)}: not a hits row ({len(row)} fields: {row[:7]!r})") from None
    return HitsTable(hits, meta.compat, rules.get(meta.scores) if meta.scores else None)
