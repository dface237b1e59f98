"""Label tokens of a video list turned into class indices.

An integer is a class index (``0 <= i < K`` with K class names, ``>= 0`` without); any other token
is a class name, matched exactly, then normalised (lower case, ``_`` read as a space, spaces stripped
and collapsed). Class names need the class-name list (``--classes``). A label repeated within one
entry is kept once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path

from bike_cli.errors import InputError, location

_INT = re.compile(r"[+-]?\d+")


def normalise(name: str) -> str:
    """Lower case, '_' as space, spaces stripped and collapsed."""
    return " ".join(name.replace("_", " ").lower().split())


class LabelParser:
    """Turns label tokens into class indices; errors name the list file and line."""

    def __init__(self, source: Path, class_names: Sequence[str] | None) -> None:
        self.source = source
        self.names = list(class_names) if class_names is not None else None
        self.exact = {name: i for i, name in enumerate(self.names or ())}
        self.normal: dict[str, list[int]] = {}
        for i, name in enumerate(self.names or ()):
            self.normal.setdefault(normalise(name), []).append(i)
        self.cache: dict[str, int] = {}  # token -> index, for tokens already accepted
        self.cells: dict[tuple[str, str | None], tuple[int, ...]] = {}  # (cell, sep) -> indices

    def labels(self, cell: str, line: int, sep: str | None = None) -> tuple[int, ...]:
        """Class indices of the labels in `cell` split on `sep` (default: whitespace), each once."""
        found = self.cells.get((cell, sep))
        if found is None:
            tokens = [token.strip() for token in cell.split(sep)]
            indices = (self.index(token, line) for token in tokens if token)
            found = self.cells[cell, sep] = tuple(dict.fromkeys(indices))
        return found

    def index(self, token: str, line: int) -> int:
        """The class index of one label token."""
        found = self.cache.get(token)
        if found is None:
            found = self.cache[token] = self._parse(token, location(self.source, line))
        return found

    def _parse(self, token: str, where: str) -> int:
        """The class index of a token not seen before; InputError (at `where`) when it names none."""
        if _INT.fullmatch(token):
            return self._check_range(int(token), where)
        if self.names is None:
            raise InputError(
                f"{where}: label {token!r} is a class name but no class names were given; "
                "pass --classes FILE"
            )
        if token in self.exact:
            return self.exact[token]
        hits = self.normal.get(normalise(token), [])
        if len(hits) > 1:
            choices = ", ".join(repr(self.names[i]) for i in hits)
            raise InputError(f"{where}: label {token!r} matches several classes: {choices}")
        if not hits:
            raise InputError(self._unknown(token, where))
        return hits[0]

    def _check_range(self, index: int, where: str) -> int:
        """`index`, after checking it is a valid class index."""
        if index < 0:
            raise InputError(f"{where}: label {index} is negative (class indices start at 0)")
        if self.names is not None and index >= len(self.names):
            raise InputError(
                f"{where}: label {index} is out of range for {len(self.names)} classes "
                f"(0..{len(self.names) - 1})"
            )
        return index

    def _unknown(self, token: str, where: str) -> str:
        """The message for an unknown class name, with up to three close matches."""
        originals = {normalise(name): name for name in reversed(self.names or ())}
        close = difflib.get_close_matches(normalise(token), list(originals), n=3, cutoff=0.6)
        hint = ", ".join(repr(originals[c]) for c in close)
        hint = f"; did you mean {hint}?" if close else " (no close match)"
        return f"{where}: unknown class name {token!r}{hint}"
