"""The check every stage makes before any work: no output is an input, or another output, of the run.

Paths are compared after resolving symlinks, `.` and `..` (and by device and inode where both
exist, which also catches hard links), so `--failures ./x.h5` is seen to be `--out x.h5`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from bike_cli.errors import InputError

PathOptions = Mapping[str, "Path | Iterable[Path] | None"]


def _keys(path: Path) -> set[tuple]:
    """The resolved path, and the device and inode where the file exists (hard links share them)."""
    keys = {("path", os.path.realpath(path))}
    try:
        st = os.stat(path)
        keys.add(("inode", st.st_dev, st.st_ino))
    except (OSError, ValueError):
        pass
    return keys


def _flatten(options: PathOptions) -> list[tuple[str, Path]]:
    pairs = []
    for option, value in options.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, Path)) else list(value)
        pairs += [(option, Path(v)) for v in values if v is not None]
    return pairs


def check_distinct_outputs(inputs: PathOptions, outputs: PathOptions) -> None:
    """InputError naming both options when an output is an input or another output of the same run."""
    seen: dict[tuple, tuple[str, Path, str]] = {}
    for option, path in _flatten(inputs):
        for key in _keys(path):
            seen.setdefault(key, (option, path, "input"))
    for option, path in _flatten(outputs):
        keys = _keys(path)
        hit = next((seen[key] for key in keys if key in seen), None)
        if hit is not None:
            other, other_path, role = hit
            raise InputError(f"{option} {path} is the same file as {other} {other_path} (an {role} of this run): "
                             f"writing it would destroy the {role}; choose another {option}")
        for key in keys:
            seen[key] = (option, path, "output")


def check_file_output(option: str, path: Path) -> None:
    """An output file must not be an existing folder."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")


def check_folder_output(option: str, path: Path) -> None:
    """An output folder must not be an existing file."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is an existing file; give a folder (new or one bike wrote)")
