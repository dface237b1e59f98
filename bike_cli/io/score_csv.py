"""The score CSV: one row per video, one score column per class (documented in docs/formats.md).

Columns, in this order:

    video_id      the video's id, as in the feature cache
    label         single-label files: the class index, -1 where unknown
    (or labels)   multi-label files: the ';'-joined class indices, -1 where the video has none
    <class 0> ... one column per class, in class-index order, named by the class name
                  (see `class_columns`): the video's score for that class

Scores are any per-class score where higher means more likely (cosine similarities for the
Attributes branch S_A, logits or probabilities for the Video branch), rounded to 7 significant
digits (the values `%.7g` writes, in the shortest notation: see `bike_cli.io.csv_numbers`). The class order is the column order: readers use positions, the names are for people.
The file is written under a temporary name and renamed into place.

The label-cell helpers are shared with the attributes CSV (`bike_cli.io.attributes_csv`).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bike_cli.errors import InputError, location
from bike_cli.io.atomic import atomic_write
from bike_cli.io.csv_numbers import write_number_rows
from bike_cli.io.file_kind import CSV_WORDS, csv_kind, not_text

log = logging.getLogger(__name__)

ID_COLUMN = "video_id"
LABEL_COLUMN = "label"  # single-label files
LABELS_COLUMN = "labels"  # multi-label files
RESERVED_COLUMNS = (ID_COLUMN, LABEL_COLUMN, LABELS_COLUMN)
UNKNOWN_LABEL = "-1"
SCORE_FORMAT = "%.7g"


@dataclass
class ScoreTable:
    """The content of a score CSV."""

    video_ids: list[str]  # [N]
    labels: np.ndarray  # int64 [N] (-1 = unknown) or uint8 [N, K] multi-hot (multi-label files)
    scores: np.ndarray  # float32 [N, K]
    class_names: list[str]  # [K] the column names, in class-index order
    source: Path | None = None

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2


# ----------------------------------------------------------------------------- label cells


def label_tuples(labels: np.ndarray) -> list[tuple[int, ...]]:
    """Class indices per row of cache-style labels: int [N] (-1 = unknown) or multi-hot [N, K]."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return [tuple(int(i) for i in np.flatnonzero(row)) for row in labels]
    return [() if int(v) < 0 else (int(v),) for v in labels]


def format_label_cell(indices: Sequence[int]) -> str:
    """`3`, `1;4;7`, or `-1` for no label."""
    return ";".join(str(int(i)) for i in indices) if len(indices) else UNKNOWN_LABEL


def parse_label_cell(cell: str, multilabel: bool, where: str, num_classes: int | None = None) -> tuple[int, ...]:
    """The class indices of a label cell (() for -1 or empty); InputError naming `where` otherwise."""
    text = cell.strip()
    if text in ("", UNKNOWN_LABEL):
        return ()
    tokens = [t.strip() for t in text.split(";")]
    if not multilabel and len(tokens) > 1:
        raise InputError(f"{where}: label {cell!r} has several classes in a single-label file "
                         f"(multi-label files name the column {LABELS_COLUMN!r})")
    indices = []
    for token in tokens:
        if not token.isdigit():
            raise InputError(f"{where}: label {cell!r} is not a class index (or ';'-joined indices, -1 unknown)")
        if num_classes is not None and int(token) >= num_classes:
            raise InputError(f"{where}: label {token} is out of range for {num_classes} classes")
        indices.append(int(token))
    return tuple(dict.fromkeys(indices))


def label_column(multilabel: bool) -> str:
    return LABELS_COLUMN if multilabel else LABEL_COLUMN


# ----------------------------------------------------------------------------- writing


def class_columns(class_names: Sequence[str]) -> list[str]:
    """Unique column names for the classes: the name with whitespace collapsed; an empty name becomes
    `class_<i>`; a name equal to a reserved or an earlier column gets ` #<i>` appended (i = class index)."""
    taken = set(RESERVED_COLUMNS)
    columns = []
    for i, name in enumerate(class_names):
        column = " ".join(str(name).split()) or f"class_{i}"
        while column in taken:
            column = f"{column} #{i}"
        taken.add(column)
        columns.append(column)
    return columns


def write_score_csv(path: str | Path, video_ids: Sequence[str], labels: np.ndarray, scores: np.ndarray,
                    class_names: Sequence[str]) -> Path:
    """Write scores [N, K] with labels (int [N] or multi-hot [N, K]) atomically to `path`."""
    path = Path(path)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    n = len(video_ids)
    multi_ok = labels.ndim == 1 or labels.shape[1:] == (len(class_names),)
    if scores.shape != (n, len(class_names)) or labels.shape[:1] != (n,) or not multi_ok or not class_names:
        raise InputError(f"score table for {path}: {n} video ids, labels {labels.shape}, scores {scores.shape} "
                         f"and {len(class_names)} class names do not fit together")
    _check_unique_ids(video_ids, path)
    not_finite = np.flatnonzero(~np.isfinite(scores).all(1))
    if not_finite.size:
        raise InputError(f"{path}: the scores of video {video_ids[not_finite[0]]!r} are not all finite numbers")
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow([ID_COLUMN, label_column(labels.ndim == 2),
                                                      *class_columns(class_names)])
    prefixes = [f"{csv_field(vid)},{format_label_cell(indices)}," for vid, indices in
                zip(video_ids, label_tuples(labels))]
    with atomic_write(path, "wb") as fh:
        fh.write(header.getvalue().encode("utf-8"))
        write_number_rows(fh, prefixes, scores)  # the scores, %.7g-rounded (SCORE_FORMAT)
    return path


def csv_field(text: str) -> str:
    """`text` as one CSV field: quoted (quotes doubled) where it holds a comma, quote or line break."""
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _check_unique_ids(video_ids: Sequence[str], path: Path) -> None:
    seen: set[str] = set()
    for vid in video_ids:
        if vid in seen:
            raise InputError(f"{path}: video id {vid!r} appears twice in the score table")
        seen.add(vid)


# ----------------------------------------------------------------------------- reading


def read_score_csv(path: str | Path) -> ScoreTable:
    """Read a score CSV written by bike (or by hand in the same layout); errors name the file and row."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"score CSV {'is not a file' if source.exists() else 'not found'}: {source}")
    header = _read_header(source)
    multilabel = header[1] == LABELS_COLUMN
    names = header[2:]
    try:
        frame = pd.read_csv(source, skiprows=1, header=None, names=list(range(len(header))),
                            dtype={0: str, 1: str}, keep_default_na=False, na_filter=False,
                            encoding="utf-8")
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{source}: malformed score CSV ({e})") from None
    video_ids = frame[0].tolist()
    _check_unique_ids(video_ids, source)
    scores = _score_matrix(frame, names, video_ids, source)
    cells = [parse_label_cell(c, multilabel, f"{source}: row {i + 1} (video {v!r})", len(names))
             for i, (c, v) in enumerate(zip(frame[1].tolist(), video_ids))]
    if multilabel:
        labels = np.zeros((len(cells), len(names)), dtype=np.uint8)
        for row, indices in enumerate(cells):
            labels[row, list(indices)] = 1
    else:
        labels = np.array([c[0] if c else -1 for c in cells], dtype=np.int64)
    return ScoreTable(video_ids, labels, scores, names, source)


def _read_header(source: Path) -> list[str]:
    try:
        with open(source, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError as e:
        raise not_text(source, "score CSV", e) from None
    except csv.Error as e:  # a header cell over the csv module's 128 KiB field limit
        raise InputError(f"{location(source, 1)}: malformed score CSV header ({e})") from None
    kind = csv_kind(header)
    if kind is not None and kind != CSV_WORDS["score"]:  # another of bike's CSVs
        raise InputError(f"{source} is {kind}, not a score CSV: give the scores instead (eval's "
                         "video_scores.csv / attrs_scores.csv, or gen-attributes --scores)")
    if len(header) < 3 or header[0] != ID_COLUMN or header[1] not in (LABEL_COLUMN, LABELS_COLUMN):
        raise InputError(f"{location(source, 1)}: expected the header 'video_id,label,<class>,...' "
                         f"(or 'labels' for multi-label scores), got {','.join(header)!r}")
    repeated = [c for i, c in enumerate(header) if c in header[:i]]
    if repeated:
        raise InputError(f"{location(source, 1)}: column {repeated[0]!r} appears twice in the header")
    return header


def _score_matrix(frame: pd.DataFrame, names: list[str], video_ids: list[str], source: Path) -> np.ndarray:
    """float32 [N, K] of the class columns; InputError naming the first cell that is not a finite number."""
    scores = np.empty((len(frame), len(names)), dtype=np.float32)
    for k, name in enumerate(names):
        column = pd.to_numeric(frame[k + 2], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            row = int(bad[0])
            raise InputError(f"{source}: row {row + 1} (video {video_ids[row]!r}), column {name!r}: "
                             f"{frame[k + 2].iloc[row]!r} is not a finite number")
        scores[:, k] = column
    return scores
