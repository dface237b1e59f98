"""The one way bike writes a file: atomically, durably, and with one clear line when the OS says no.

Every file bike writes goes through `atomic_write` (or its helpers `write_text`, `write_bytes`,
`torch_save`, `copy_file`): the content goes to a temporary file beside the target, named
`.NAME.PID.RANDOM.tmp` (unique per writer, so two processes never share one), it is fsync'ed,
renamed over the target with `os.replace`, and the folder is fsync'ed so that the rename itself
survives a power loss. A reader therefore sees the old file or the new one, never a torn one.

A write that runs out of space (ENOSPC, EDQUOT, EFBIG) raises `DiskFullError`, one the OS refuses
(EACCES, EPERM, EROFS: a folder bike may not write) `NotWritableError`, both after removing the
temporary file (`bike_cli.io.write_errors`); the target keeps its previous content.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bike_cli.io.write_errors import DiskFullError, device_of, write_errors_as_bike

TMP_SUFFIX = ".tmp"


def ensure_free_space(path: Path, nbytes: int) -> None:
    """DiskFullError before writing `nbytes` into `path` when its file system has less free space.

    HDF5 handles a full disk badly (it can crash the process), so HDF5 writers check first."""
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
    """`torch.save` through the atomic-write rule.

    Serialised in memory first: torch's own file writer reports a full disk as an unrelated
    RuntimeError, a plain write reports ENOSPC."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path, "wb") as fh:
        fh.write(buffer.getbuffer())
    return Path(path)


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


def remove_temps_of(path: Path) -> None:
    """Remove the temporary files of writers of `path` that died (call while holding its lock)."""
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def remove_stale_temps(folder: Path) -> None:
    """Remove bike temporary files in `folder` left by writers that died (call while holding its lock)."""
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
    for tmp in folder.glob(f"*{TMP_SUFFIX}"):  # the fixed `.tmp` names of bike before the unique suffix
        tmp.unlink(missing_ok=True)
