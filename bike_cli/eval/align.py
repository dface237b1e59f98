"""Score tables of several branches, checked to hold the same videos, labels and classes, in one row order.

Fusion adds the rows of one video across tables, so the tables must agree: the same classes (a
table with them in another order has its columns and labels mapped to the first one's by name), the
same kind of labels, the same videos (any row order) with the same labels. An InputError names the
files and the first difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bike_cli.data.class_names import columns_by_names, labels_by_names
from bike_cli.errors import InputError
from bike_cli.io.score_csv import ScoreTable, read_score_csv


def table_name(table: ScoreTable, i: int) -> str:
    """The table's file, or `input i+1` for a table read from nowhere."""
    return str(table.source) if table.source is not None else f"input {i + 1}"


def read_aligned(paths: Sequence[Path]) -> list[ScoreTable]:
    """Read the score CSVs and align them (`align_tables`)."""
    tables = [read_score_csv(p) for p in paths]
    return align_tables(tables)


def align_tables(tables: Sequence[ScoreTable]) -> list[ScoreTable]:
    """The tables with rows in the first one's order; InputError naming the files when their classes,
    video ids or labels differ."""
    first = tables[0]
    aligned = [first]
    for i, table in enumerate(tables[1:], start=1):
        _check_same_classes(first, table, table_name(first, 0), table_name(table, i))
        table = _by_class_names(first, table, table_name(first, 0), table_name(table, i))
        aligned.append(_reordered(first, table, table_name(first, 0), table_name(table, i)))
    return aligned


def _check_same_classes(a: ScoreTable, b: ScoreTable, name_a: str, name_b: str) -> None:
    if a.multilabel != b.multilabel:
        kinds = {True: "multi-label ('labels' column)", False: "single-label ('label' column)"}
        raise InputError(f"{name_a} is {kinds[a.multilabel]} but {name_b} is {kinds[b.multilabel]}")
    if len(a.class_names) != len(b.class_names):
        raise InputError(f"{name_a} has {len(a.class_names)} classes but {name_b} has {len(b.class_names)}")


def _by_class_names(first: ScoreTable, table: ScoreTable, name_a: str, name_b: str) -> ScoreTable:
    """`table` with its class columns and labels in the class order of `first` (mapped by name)."""
    names, recorded = list(first.class_names), list(table.class_names)
    scores = columns_by_names(table.scores, names, recorded, name_a, name_b)
    labels = labels_by_names(table.labels, names, recorded, name_a, name_b)
    return ScoreTable(list(table.video_ids), labels, scores, names, table.source)


def _reordered(first: ScoreTable, table: ScoreTable, name_a: str, name_b: str) -> ScoreTable:
    position = {vid: i for i, vid in enumerate(table.video_ids)}
    missing = [vid for vid in first.video_ids if vid not in position]
    wanted = set(first.video_ids)
    extra = [vid for vid in table.video_ids if vid not in wanted]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} videos of {name_a} are not in {name_b} (first: {_first(missing)})")
        if extra:
            parts.append(f"{len(extra)} videos of {name_b} are not in {name_a} (first: {_first(extra)})")
        raise InputError("the score files hold different videos: " + "; ".join(parts))
    order = np.array([position[vid] for vid in first.video_ids], dtype=np.int64)
    labels = table.labels[order]
    differ = np.flatnonzero((labels != first.labels).reshape(len(order), -1).any(1))
    if differ.size:
        vid = first.video_ids[differ[0]]
        raise InputError(f"video {vid!r} has label {_label_text(first.labels[differ[0]])} in {name_a} but "
                         f"{_label_text(labels[differ[0]])} in {name_b}")
    return ScoreTable(list(first.video_ids), labels, table.scores[order], list(table.class_names), table.source)


def _first(ids: Sequence[str], shown: int = 3) -> str:
    return ", ".join(repr(v) for v in ids[:shown]) + (", ..." if len(ids) > shown else "")


def _label_text(label: np.ndarray) -> str:
    label = np.asarray(label)
    if label.ndim == 0:
        return str(int(label))
    return ";".join(str(i) for i in np.flatnonzero(label)) or "-1"
