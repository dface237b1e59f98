"""The one way bike writes a file (docs/formats.md, "Rules every output follows"): a temporary file beside
the target, fsync'ed, renamed over it, the folder fsync'ed; a full disk or a folder bike may not write is
one line (`DiskFullError` / `NotWritableError`) and the target keeps its previous content."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bike_cli.errors import BikeError

TMP_SUFFIX = ".tmp"
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DENIED_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


class DiskFullError(BikeError):
    """No space left (or a quota or file-size limit) while bike wrote a file."""

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        super().__init__(f"no space left on {device_of(path)} while writing {path}; finished work is kept, "
                         "free space and run the same command")
        self.path = path


class NotWritableError(BikeError):
    """The OS refused to create or write a file: no permission, or a read-only file system."""

    def __init__(self, path: Path | str, code: int) -> None:
        path = Path(path)
        folder = path.parent  # the nearest existing folder above: the one that refused to hold it
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        super().__init__(f"cannot write {path}: {folder} is not writable ({os.strerror(code)}); finished work "
                         "is kept, make the folder writable or choose another output")
        self.path, self.errno = path, code


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


def ensure_free_space(path: Path, nbytes: int) -> None:
    """DiskFullError before writing `nbytes` into `path` when its file system has less free space (HDF5
    handles a full disk badly, it can crash the process: HDF5 writers check first)."""
    folder = path.parent if path.parent.exists() else Path(device_of(path))
    if shutil.disk_usage(folder).free < nbytes + (1 << 20):
        raise DiskFullError(path)


def temp_path(path: Path) -> Path:
    """A temporary name beside `path`, unique to this writer."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write (by any library: HDF5, torch); on success it replaces `path`."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with write_errors_as_bike(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; on success it is fsync'ed and renamed over `path`."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as fh:
        yield fh
        fh.flush()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def torch_save(obj: object, path: str | Path) -> Path:
    """`torch.save` through the atomic-write rule, serialised in memory first: torch's own file writer
    reports a full disk as an unrelated RuntimeError, a plain write reports ENOSPC."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


def copy_file(source: str | Path, path: str | Path) -> Path:
    """Copy `source` to `path` atomically (a kill during the copy leaves the old `path` intact)."""
    with open(source, "rb") as src, atomic_write(path, "wb") as out:  # a refused read is the source's
        shutil.copyfileobj(src, out, 1 << 20)
    return Path(path)


def append_line(path: str | Path, line: str) -> None:
    """Append one line and fsync (append-only logs such as metrics.jsonl; readers drop a torn tail)."""
    path = Path(path)
    with write_errors_as_bike(path), open(path, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())
