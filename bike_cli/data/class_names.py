"""Class names: class-name files (`read_class_names`), the one rule for matching the classes a file records
with the class file in use (`label_order`, `labels_by_names`, `columns_by_names`), base-to-novel subsets
(`class_subset`, `restrict_labels`) and `--class-texts` files (`read_class_texts`); formats: docs/formats.md.
Names match in their `lexicons.normalise_name` form (`brush_hair` finds `brush hair`); a subset is picked
by name from the classes labels are numbered by, never guessed from the numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from bike_cli.data.lexicons import builtin_file, normalise_name, read_lines
from bike_cli.data.video_lists import VideoEntry, csv_cells, nonblank
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
    seen: dict[str, int] = {}
    for number, name in rows:
        if (first := seen.setdefault(name, number)) != number:
            raise InputError(f"{location(source, number)}: class name {name!r} appears twice "
                             f"(lines {first} and {number})")
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


def _first(names: Sequence[str], shown: int) -> str:
    """The first `shown` names quoted, then how many more there are."""
    return ", ".join(map(repr, names[:shown])) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def match_class_names(wanted: Sequence[str], class_names: Sequence[str], what: str, where: str) -> np.ndarray:
    """Indices in `class_names` of the `wanted` names (compared as `normalise_name` forms); an InputError
    naming `what`, `where` and the missing names when some are not there, or one matching several."""
    index: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        index.setdefault(normalise_name(name), []).append(i)
    keys = [normalise_name(name) for name in wanted]
    missing = [name for name, key in zip(wanted, keys) if key not in index]
    if missing:
        raise InputError(f"{what}: {len(missing)} of its {len(wanted)} classes are not among the "
                         f"{len(class_names)} classes of {where}: {_first(missing, 10)}")
    ambiguous = [name for name, key in zip(wanted, keys) if len(index[key]) > 1]
    if ambiguous:
        raise InputError(f"{what}: class {ambiguous[0]!r} matches several columns of {where}")
    return np.array([index[key][0] for key in keys], dtype=np.int64)


def check_disjoint(base: Sequence[str], novel: Sequence[str], base_source: object, novel_source: object) -> None:
    """InputError naming the shared classes when the base and the novel classes overlap."""
    novel_keys = {normalise_name(name) for name in novel}
    shared = [name for name in base if normalise_name(name) in novel_keys]
    if shared:
        raise InputError(f"--base-classes {base_source} and --novel-classes {novel_source} share "
                         f"{len(shared)} classes ({_first(shared, 5)}): base and novel classes must be disjoint")


def restrict_labels(labels: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Labels numbered by K classes renumbered by the subset at `positions` [k] (indices among the K):
    integer labels [N] of classes outside the subset become -1 (unknown), multi-hot rows [N, K] keep the
    subset's columns [N, k]."""
    labels = np.asarray(labels)
    positions = np.asarray(positions, dtype=np.int64)
    if labels.ndim == 2:
        return labels[:, positions]
    num_classes = int(max(labels.max(initial=-1), positions.max(initial=-1))) + 1
    remap = np.full(num_classes, -1, dtype=np.int64)
    remap[positions] = np.arange(len(positions))
    return np.where(labels >= 0, remap[np.clip(labels, 0, None)], -1).astype(labels.dtype if labels.dtype.kind == "i" else np.int64)


def subset_rows(labels: np.ndarray, positions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A cache's labels (numbered by the classes in use) as training and validation read them with
    `--base-classes`: renumbered by the subset at `positions` (`restrict_labels`; unchanged when None),
    and the rows [n] that keep a class (an integer label >= 0 [N], a multi-hot row with a class [N, K]), so the
    videos of other classes are left out."""
    labels = np.asarray(labels) if positions is None else restrict_labels(labels, positions)
    return labels, np.flatnonzero(labels.any(1) if labels.ndim == 2 else labels >= 0)


def class_subset(path: str | Path | None, class_names: Sequence[str], where: object) -> np.ndarray | None:
    """Positions [k] among `class_names` (the classes labels are numbered by, named by `where`) of the
    classes of the class file `path` (`--base-classes`), in the file's order; None without a file."""
    if path is None:
        return None
    return match_class_names(read_class_names(path), class_names, f"--base-classes {path}", where)


def subset_entries(entries: Sequence[tuple[int, VideoEntry]], positions: np.ndarray) -> list[tuple[int, VideoEntry]]:
    """(list index, entry) pairs whose labels (numbered by K classes) are renumbered by the subset at
    `positions`; labels outside the subset are dropped, so a video of no subset class has none left."""
    remap = {int(p): i for i, p in enumerate(positions)}
    return [(i, replace(e, labels=tuple(remap[label] for label in e.labels if label in remap)))
            for i, e in entries]


CLASS_TEXTS_HEADER = ["class", "text"]
WHAT = "class-texts file"

ClassTextsMap = dict[str, tuple[str, ...]]  # class name (as written) -> its descriptions, in file order


def read_class_texts(path: str | Path) -> ClassTextsMap:
    """The descriptions of each class in a CSV or JSON class-texts file; classes whose names are equal
    after `normalise_name` are one class (their descriptions joined in file order)."""
    source = Path(path)
    lines = read_lines(source, WHAT)
    text = "\n".join(lines).strip()
    if not text:
        raise InputError(f"{source}: the {WHAT} is empty")
    pairs = _json_pairs(source, text) if text.startswith("{") else _csv_pairs(source, lines)
    texts: dict[str, list[str]] = {}
    spelled: dict[str, str] = {}  # normalised name -> its first spelling
    for name, description in pairs:
        key = spelled.setdefault(normalise_name(name), name)
        texts.setdefault(key, []).append(description)
    return {name: tuple(descriptions) for name, descriptions in texts.items()}


def _csv_pairs(source: Path, lines: list[str]) -> list[tuple[str, str]]:
    """(class, text) of each row of a `class,text` CSV."""
    rows = list(nonblank(lines))
    first_line, first = rows[0]
    if [c.strip().lower() for c in csv_cells(source, first_line, first)] != CLASS_TEXTS_HEADER:
        raise InputError(f"{location(source, first_line)}: expected the header 'class,text' (or a JSON object "
                         f"{{\"class\": [\"text\", ...]}}), got {first!r}")
    pairs = []
    for number, line in rows[1:]:
        cells = csv_cells(source, number, line)
        if len(cells) != 2:
            raise InputError(f"{location(source, number)}: expected 'class,text', got {line!r} "
                             "(quote texts that contain commas)")
        name, description = cells[0].strip(), cells[1].strip()
        if not name or not description:
            raise InputError(f"{location(source, number)}: an empty {'class name' if not name else 'text'}")
        pairs.append((name, description))
    if not pairs:
        raise InputError(f"{source}: the {WHAT} has a header but no descriptions")
    return pairs


def _json_pairs(source: Path, text: str) -> list[tuple[str, str]]:
    """(class, text) of each description of a JSON object {class: [text, ...] or text}."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InputError(f"{source}: not a JSON {WHAT}: {err}") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{source}: a JSON {WHAT} is an object {{\"class\": [\"text\", ...]}} with at least one class")
    pairs = []
    for name, value in data.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise InputError(f"{source}: class {name!r} needs a non-empty list of non-empty texts, not {value!r}")
        if not name.strip():
            raise InputError(f"{source}: an empty class name")
        pairs += [(name.strip(), v.strip()) for v in values]
    return pairs


def descriptions_for(texts: Mapping[str, Sequence[str]], class_names: Sequence[str], source: object
                     ) -> list[tuple[str, ...]]:
    """Per class of `class_names`, its descriptions in `texts` (matched by `normalise_name`); one
    InputError naming every class `texts` (from `source`) does not describe."""
    by_name: dict[str, tuple[str, ...]] = {}
    for name, descriptions in texts.items():
        key = normalise_name(name)
        by_name[key] = by_name.get(key, ()) + tuple(descriptions)
    missing = [name for name in class_names if not by_name.get(normalise_name(name))]
    if missing:
        raise InputError(f"{source} has no description for {len(missing)} of the {len(class_names)} classes: "
                         f"{_first(missing, 10)} (every class needs one; names match ignoring case, '_' and spacing)")
    return [by_name[normalise_name(name)] for name in class_names]


def described_classes(path: str | Path | None, class_names: Sequence[str]) -> list[tuple[str, ...]] | None:
    """The descriptions of each class of `class_names` in the class-texts file `path`; None without one."""
    return None if path is None else descriptions_for(read_class_texts(path), class_names, path)
