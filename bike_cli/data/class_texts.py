"""Class-texts files (`--class-texts`): one or more descriptions per class (docs/formats.md, "Class texts").

Two layouts, told apart by the first non-blank character (`{`: JSON):

- CSV with the header ``class,text``, one description a row; a class may repeat (its rows in file
  order). Quote cells that contain commas.
- JSON: ``{"class name": ["description", ...], ...}`` (a single string counts as one description).

Classes are matched to the class list in use by `bike_cli.data.lexicons.normalise_name` (case, `_`
and spacing do not matter); a file may describe more classes than are used, but every class used
needs at least one description (`descriptions_for`: one error naming the missing ones and the file).
Each description takes the class name's place in the prompt templates (`--template "{}"` uses it as
it is); `bike_cli.models.text.encode_class_texts` averages them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from bike_cli.data.lexicons import normalise_name
from bike_cli.data.video_lists import csv_cells, nonblank, read_lines
from bike_cli.errors import InputError, location

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
        shown = ", ".join(repr(n) for n in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputError(f"{source} has no description for {len(missing)} of the {len(class_names)} classes: "
                         f"{shown} (every class needs one; names match ignoring case, '_' and spacing)")
    return [by_name[normalise_name(name)] for name in class_names]


def described_classes(path: str | Path | None, class_names: Sequence[str]) -> list[tuple[str, ...]] | None:
    """The descriptions of each class of `class_names` in the class-texts file `path`; None without one."""
    return None if path is None else descriptions_for(read_class_texts(path), class_names, path)
