"""The shape checks of an output option: a file output is not a folder, a folder output not a file.

Whether an output is an input (or a file an input owns, or another output) is the guard's check:
`bike_cli.io.guard.PathGuard`.
"""

from __future__ import annotations

from pathlib import Path

from bike_cli.errors import InputError


def check_file_output(option: str, path: Path) -> None:
    """An output file must not be an existing folder."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")


def check_folder_output(option: str, path: Path) -> None:
    """An output folder must not be an existing file."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is an existing file; give a folder (new or one bike wrote)")
