"""The OS refusing a write, as one line: a full disk, or a folder bike may not write.

Every first write of a file goes through `write_errors_as_bike` (the atomic writer, the appended
`metrics.jsonl`, the writer lock, the folders outputs are made in), which turns the OS's refusal
into a `BikeError` the CLI prints as one `error:` line with exit 1:

- ENOSPC, EDQUOT, EFBIG (and h5py's own words for them): `DiskFullError`, "no space left on DEVICE
  while writing FILE; finished work is kept, free space and run the same command";
- EACCES, EPERM, EROFS: `NotWritableError`, "cannot write FILE: FOLDER is not writable (Permission
  denied); finished work is kept, make the folder writable or choose another output".
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from bike_cli.errors import BikeError

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DENIED_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


class DiskFullError(BikeError):
    """No space left (or a quota or file-size limit) while bike wrote a file."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        super().__init__(
            f"no space left on {device_of(path)} while writing {path}; finished work is kept, "
            "free space and run the same command"
        )
        self.path = path


class NotWritableError(BikeError):
    """The OS refused to create or write a file: no permission, or a read-only file system."""

    def __init__(self, path: Path | str, code: int) -> None:
        path = Path(path)
        super().__init__(
            f"cannot write {path}: {nearest_folder(path)} is not writable ({os.strerror(code)}); finished work "
            "is kept, make the folder writable or choose another output"
        )
        self.path, self.errno = path, code


def nearest_folder(path: Path) -> Path:
    """The nearest existing folder above `path` (the one that refused to hold it)."""
    folder = path.parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def device_of(path: Path) -> str:
    """The mount point that holds `path` (the nearest existing folder's)."""
    folder = path.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return str(folder)


def is_disk_full(err: BaseException) -> bool:
    """True for an OSError of a full disk, including h5py's (which carry the errno only in the text)."""
    if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
        return True
    text = str(err)
    return isinstance(err, (OSError, RuntimeError)) and any(
        mark in text for mark in ("No space left", "Disk quota exceeded", "File too large",
                                  *(f"errno = {code}" for code in FULL_ERRNOS))
    )


def _is_about(filename: object, path: Path) -> bool:
    """Whether the OS error's file is `path`, a folder above it, or a file beside it (its temporary
    file): a refused read of another file inside the block is that file's error, not this one."""
    if filename is None:
        return True
    failed, target = Path(os.path.abspath(os.fsdecode(filename))), Path(os.path.abspath(path))
    return failed == target or failed in target.parents or failed.parent == target.parent


@contextlib.contextmanager
def write_errors_as_bike(path: Path | str) -> Iterator[None]:
    """Turn the OS refusing a write of `path` inside the block into `DiskFullError` / `NotWritableError`."""
    try:
        yield
    except BikeError:
        raise
    except (OSError, RuntimeError) as err:
        if is_disk_full(err):
            raise DiskFullError(path) from None
        if isinstance(err, OSError) and err.errno in DENIED_ERRNOS and _is_about(err.filename, Path(path)):
            raise NotWritableError(path, err.errno) from None
        raise


def make_folder(folder: Path | str) -> Path:
    """`folder` and its parents, made where missing; the OS's refusal as one line (see above)."""
    folder = Path(folder)
    with write_errors_as_bike(folder):
        folder.mkdir(parents=True, exist_ok=True)
    return folder
