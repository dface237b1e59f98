"""The hits CSV of `bike search --out HITS.csv`: the top videos of each query, and its sidecar.

Schema version 1 is this column set, in this order (documented in docs/formats.md):

    query          the query as encoded (after --template), one block of rows per query, in query order
    rank           1 = best, per query
    video_id       the video's id, as in the feature cache
    path           where the video was looked for (--root joined with the id; the id without --root)
    score          the search score (rounded to 7 significant digits, as the score CSV)
    salient_step   0-based position t of the most salient of the T sampled frames
    salient_frame  that frame's number in the video (from the cache's sampling rule and frame count)

The sidecar `HITS.csv.meta.json` (`bike_cli.io.csv_meta`) records the cache's profile and, in
`scores`, the rule: `search-vcs` or `search-mean` (`SCORE_RULES`). Written atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bike_cli.errors import InputError, location
from bike_cli.io.atomic import write_text
from bike_cli.io.csv_meta import read_csv_meta, write_csv_meta
from bike_cli.io.csv_numbers import round_significant
from bike_cli.io.file_kind import not_text

SCHEMA_VERSION = 1
COLUMNS = ("query", "rank", "video_id", "path", "score", "salient_step", "salient_frame")
SCORE_RULES = {"vcs": "search-vcs", "mean": "search-mean"}  # --rule -> the sidecar's `scores`


@dataclass(frozen=True)
class Hit:
    """One row: a video found for a query."""

    query: str
    rank: int
    video_id: str
    path: str
    score: float
    salient_step: int
    salient_frame: int


@dataclass
class HitsTable:
    hits: list[Hit]
    compat: str  # the profile of the cache searched
    rule: str | None  # "vcs" | "mean" (None: no sidecar)


def write_hits_csv(path: str | Path, hits: Sequence[Hit], compat: str, rule: str) -> Path:
    """Write `hits` and the sidecar (`scores` = SCORE_RULES[rule]) atomically; returns `path`."""
    if rule not in SCORE_RULES:
        raise InputError(f"unknown search rule {rule!r}: one of {', '.join(SCORE_RULES)}")
    scores = round_significant([h.score for h in hits]) if hits else []
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for hit, score in zip(hits, scores):
        writer.writerow([hit.query, hit.rank, hit.video_id, hit.path, repr(float(score)),
                         hit.salient_step, hit.salient_frame])
    write_text(path, text.getvalue())
    write_csv_meta(path, compat, SCORE_RULES[rule])
    return Path(path)


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
    if not rows or tuple(rows[0]) != COLUMNS:
        raise InputError(f"{location(source, 1)}: expected the header {','.join(COLUMNS)!r} (hits CSV schema "
                         f"{SCHEMA_VERSION}), got {','.join(rows[0]) if rows else ''!r}")
    hits = []
    for line, row in enumerate(rows[1:], 2):
        try:
            query, rank, video_id, video_path, score, step, frame = row
            hits.append(Hit(query, int(rank), video_id, video_path, float(score), int(step), int(frame)))
        except ValueError:
            raise InputError(f"{location(source, line)}: not a hits row ({len(row)} fields: {row[:7]!r})") from None
    return HitsTable(hits, meta.compat, rules.get(meta.scores) if meta.scores else None)
