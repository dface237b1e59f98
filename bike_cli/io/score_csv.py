"""The score CSV (docs/formats.md; readers use column positions) and the label-cell helpers the attributes
CSV shares. Scores are rounded to `%.7g`'s value in numpy, then written by pyarrow in the shortest text
that reads back as it: the same numbers, without Python's 0.3 us a number."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bike_cli.errors import InputError, location
from bike_cli.io.atomic import atomic_write
from bike_cli.io.file_kind import CSV_WORDS, csv_kind, not_text

ID_COLUMN = "video_id"
LABEL_COLUMN = "label"  # single-label files
LABELS_COLUMN = "labels"  # multi-label files
RESERVED_COLUMNS = (ID_COLUMN, LABEL_COLUMN, LABELS_COLUMN)
UNKNOWN_LABEL = "-1"
SCORE_FORMAT = "%.7g"
DIGITS = 7
_TIE = 1e-8  # |frac - 0.5| below this: the scaled value may sit on a rounding tie; decided by Python
_LOW, _HIGH = 10.0**DIGITS / 10, 10.0**DIGITS  # a value with DIGITS digits scales into [_LOW, _HIGH)
_POW10 = 10.0 ** np.arange(23)  # exact powers of ten in float64


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


def read_score_csv(path: str | Path) -> ScoreTable:
    """Read a score CSV written by bike (or by hand in the same layout); errors name the file and row."""
    import pandas as pd  # here, not on import: `bike search` writes CSVs without it

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
    scores = np.empty((len(frame), len(names)), dtype=np.float32)  # [N, K] of the class columns
    for k, name in enumerate(names):
        column = pd.to_numeric(frame[k + 2], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            row = int(bad[0])
            raise InputError(f"{source}: row {row + 1} (video {video_ids[row]!r}), column {name!r}: "
                             f"{frame[k + 2].iloc[row]!r} is not a finite number")
        scores[:, k] = column
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


def _python_round(values: np.ndarray) -> np.ndarray:
    """The `%.7g` decimals of `values` as doubles, by Python's own formatting (the exact reference)."""
    return np.array([float(f"{v:.{DIGITS}g}") for v in values.tolist()], dtype=np.float64)


def round_significant(values: np.ndarray) -> np.ndarray:
    """float64 copy of `values` with each element the double nearest its `%.7g` decimal.

    Vectorised where the decimal scaling is exact (one multiplication or division by a power of ten
    up to 1e22); values outside (below about 1e-16 or above 1e28 in magnitude) and rare near-ties in
    Python. Few passes over the data, in place: it is memory-bound."""
    x = np.array(values, dtype=np.float64).ravel()  # a copy: the result is written into it
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.log10(np.abs(x))
        np.floor(shift, out=shift)
        np.subtract(DIGITS - 1, shift, out=shift)  # scale by 10**shift so DIGITS digits stay before the point
    shift[~np.isfinite(shift)] = 0  # zeros
    shift = shift.astype(np.int64)
    y = _scale(x, shift)
    for _ in range(2):  # log10 can be off by one next to powers of ten: fix those few
        off = np.flatnonzero((np.abs(y) >= _HIGH) | ((np.abs(y) < _LOW) & (x != 0)))
        if not off.size:
            break
        shift[off] += np.where(np.abs(y[off]) >= _HIGH, -1, 1)
        y[off] = _scale(x[off], shift[off])
    frac = np.abs(y)
    frac -= np.floor(frac)
    frac -= 0.5
    slow = (np.abs(frac) < _TIE) | (np.abs(shift) > 22)
    np.rint(y, out=y)
    _unscale(y, shift)
    slow_at = np.flatnonzero(slow)
    y[slow_at] = _python_round(x[slow_at])
    return y.reshape(np.shape(values))


def _scale(v: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """v * 10**shift, one correctly rounded operation by an exact power of ten (|shift| clipped to 22)."""
    powers = _POW10[np.minimum(np.abs(shift), 22)]
    with np.errstate(over="ignore"):  # huge values scaled down are multiplied first, then divided below
        out = v * powers
    down = np.flatnonzero(shift < 0)
    out[down] = v[down] / powers[down]
    return out


def _unscale(m: np.ndarray, shift: np.ndarray) -> None:
    """m / 10**shift in place (the inverse of `_scale`, again one correctly rounded operation)."""
    powers = _POW10[np.minimum(np.abs(shift), 22)]
    down = np.flatnonzero(shift < 0)
    up = m[down] * powers[down]
    m /= powers
    m[down] = up


def write_number_rows(fh: BinaryIO, prefixes: Sequence[str], matrix: np.ndarray) -> None:
    """Write one line per row: `prefixes[i]` (already CSV text, ending with a comma) and the row's
    numbers, `%.7g`-rounded and comma-separated. matrix: float [N, K]."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    columns = np.asfortranarray(round_significant(matrix))  # [N, K], each column contiguous
    table = pa.Table.from_arrays([pa.array(columns[:, k]) for k in range(columns.shape[1])],
                                 names=[str(k) for k in range(columns.shape[1])])
    body = io.BytesIO()
    pa_csv.write_csv(table, body, pa_csv.WriteOptions(include_header=False))
    for prefix, line in zip(prefixes, body.getvalue().split(b"\n")):  # N lines and the empty tail
        fh.write(prefix.encode("utf-8") + line + b"\n")
