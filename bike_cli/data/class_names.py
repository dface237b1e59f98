"""Class names: class-name files (``read_class_names``) and the one rule for matching the classes a
file records with those of the class file in use (``label_order``, ``labels_by_names``,
``columns_by_names``).

Class-name files are detected from the first non-blank line: an ``id,name`` CSV with that header (ids
0..K-1 in order; every ``.csv`` file must have it); the Charades style ``c000 Holding some clothes``
when every line starts with an id token ``[a-z]?<digits>`` and some line has a name after it (ids also
0..K-1 in order, so 1-based files such as UCF101's ``classInd.txt`` are refused rather than shifted);
otherwise one name per line. Duplicate class names are an error. Blank lines are ignored. A bare
built-in name (``k400``, ``k600``, ``k700``, ``ssv2``, ``ucf101``, ...: the file lexicons of ``lexicons/``)
reads that list.
"""

from __future__ import annotations

import re
from pathlib import Path

from bike_cli.data.lexicons import builtin_file
from bike_cli.data.video_lists import csv_cells, nonblank, read_lines
from bike_cli.errors import InputError, location

CLASS_HEADER = ["id", "name"]

_ID_TOKEN = re.compile(r"[a-z]?(\d+)")


def read_class_names(path: str | Path) -> list[str]:
    """Class names, in index order, from an `id,name` CSV, a Charades-style or a plain file, or the
    built-in class list a bare name such as `k700` names (`builtin_file`: the lexicons that are files)."""
    source = builtin_file(path) or Path(path)
    lines = list(nonblank(read_lines(source, "class-name file")))
    if not lines:
        raise InputError(f"{source}: the class-name file is empty")
    first_line, first = lines[0]
    if [c.strip().lower() for c in csv_cells(source, first_line, first)] == CLASS_HEADER:
        rows = _check_ids(source, [_csv_class_row(source, n, s) for n, s in lines[1:]])
    elif source.suffix.lower() == ".csv":
        where = location(source, first_line)
        raise InputError(f"{where}: expected the header 'id,name', got {first!r}")
    elif _charades_style(lines):
        rows = _check_ids(source, [_id_class_row(source, n, s) for n, s in lines])
    else:
        rows = lines
    if not rows:
        raise InputError(f"{source}: the class-name file has a header but no class names")
    _check_unique_names(source, rows)
    return [name for _, name in rows]


def _charades_style(lines: list[tuple[int, str]]) -> bool:
    """Every line starts with an id token (`c000`, `12`) and some line has a name after it."""
    parts = [text.split(maxsplit=1) for _, text in lines]
    return all(_ID_TOKEN.fullmatch(p[0]) for p in parts) and any(len(p) > 1 for p in parts)


def _csv_class_row(source: Path, number: int, text: str) -> tuple[int, str, str]:
    """(line, id token, name) of an `id,name` row."""
    cells = csv_cells(source, number, text)
    if len(cells) != 2:
        raise InputError(
            f"{location(source, number)}: expected 'id,name', got {text!r} "
            "(quote names that contain commas)"
        )
    return number, cells[0].strip(), cells[1].strip()


def _id_class_row(source: Path, number: int, text: str) -> tuple[int, str, str]:
    """(line, id token, name) of a Charades-style `c000 name` line."""
    parts = text.split(maxsplit=1)
    if len(parts) < 2:
        raise InputError(f"{location(source, number)}: class id {parts[0]!r} has no name")
    return number, parts[0], parts[1].strip()


def _check_ids(source: Path, rows: list[tuple[int, str, str]]) -> list[tuple[int, str]]:
    """(line, name) rows after checking the ids count 0, 1, ..., K-1 in order."""
    for expected, (number, token, name) in enumerate(rows):
        match = _ID_TOKEN.fullmatch(token)
        if match is None or int(match.group(1)) != expected:
            raise InputError(
                f"{location(source, number)}: class id {token!r} out of order: expected id "
                f"{expected} (ids must be 0..K-1 in order; for 1-based files such as UCF101's "
                "classInd.txt, subtract 1 from the ids and from the list labels)"
            )
        if not name:
            raise InputError(f"{location(source, number)}: class id {token!r} has an empty name")
    return [(number, name) for number, _, name in rows]


def _check_unique_names(source: Path, rows: list[tuple[int, str]]) -> None:
    """InputError naming both lines when a class name appears twice."""
    seen: dict[str, int] = {}
    for number, name in rows:
        first = seen.setdefault(name, number)
        if first != number:
            raise InputError(
                f"{location(source, number)}: class name {name!r} appears twice "
                f"(lines {first} and {number})"
            )


def label_order(names: list[str], recorded: list[str] | None, names_source: object,
                recorded_source: object) -> list[int] | None:
    """Where each class `recorded_source` numbers its labels by (`recorded`) sits in `names`, the class
    file in use: None when nothing needs mapping (the same names in the same order, or none recorded).
    The one rule for a class file meeting a cache, checkpoint or score CSV: the same names in another
    order (or a superset) are mapped by name; a recorded name the file lacks is an InputError."""
    if not recorded or list(recorded) == list(names):
        return None
    position = {name: i for i, name in enumerate(names)}
    missing = [name for name in recorded if name not in position]
    if missing:
        raise InputError(f"{names_source} lacks the class {missing[0]!r} that {recorded_source} numbers its "
                         f"labels by ({len(missing)} of {len(recorded)} missing): its labels cannot be mapped")
    return [position[name] for name in recorded]


def relabel(labels, order: list[int] | None, num_classes: int):
    """Labels numbered by the recorded classes renumbered by the class file (`label_order`): integer
    labels [N] through `order` (the unknown marker -1 kept), multi-hot rows [N, K] moved column by column."""
    import numpy as np

    if order is None:
        return labels
    index = np.asarray(order, dtype=np.int64)
    if labels.ndim == 2:
        moved = np.zeros((len(labels), num_classes), dtype=labels.dtype)
        moved[:, index] = labels
        return moved
    return np.where(labels >= 0, index[np.clip(labels, 0, len(index) - 1)], labels)


def labels_by_names(labels, names: list[str], recorded: list[str] | None, names_source: object,
                    recorded_source: object):
    """`labels` numbered by `recorded` (the class names `recorded_source` holds) renumbered by `names`, the
    class file in use: `label_order` then `relabel`. Every stage meeting recorded labels goes through here."""
    return relabel(labels, label_order(names, recorded, names_source, recorded_source), len(names))


def columns_by_names(scores, names: list[str], recorded: list[str], names_source: object,
                     recorded_source: object):
    """Score columns [N, K] in the order of `recorded` (a score CSV's classes) moved into the order of
    `names`; InputError unless both hold the same class names (a missing column cannot be made up)."""
    unmatched = [(n, recorded_source, names_source) for n in recorded if n not in set(names)] + \
        [(n, names_source, recorded_source) for n in names if n not in set(recorded)]
    if unmatched:
        name, holder, other = unmatched[0]
        raise InputError(f"{names_source} and {recorded_source} differ in their classes: {holder} has the class "
                         f"{name!r}, which {other} lacks (the same class names are needed, in any order)")
    order = label_order(names, recorded, names_source, recorded_source)
    if order is None:
        return scores
    moved = scores.copy()
    moved[:, order] = scores
    return moved
