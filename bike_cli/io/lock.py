"""One writer per output: an exclusive `fcntl.flock` on each feature cache and run folder (`CACHE.h5.lock`
beside a cache, `OUT/.bike.lock` inside a folder, of the resolved path; docs/formats.md).

The lock file records its holder, for the message a second writer gets; the kernel releases a flock
when its process dies, so a crash's lock is simply taken over. The file is removed on release while
still locked (a process that locked the removed inode tries again), and so are the folders the lock
made that are still empty.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from bike_cli.errors import BikeError
from bike_cli.io.atomic import write_errors_as_bike

LOCK_NAME = ".bike.lock"  # inside a folder output


class OutputLockedError(BikeError):
    """Another process is writing the same output."""


def lock_path_for(output: Path, folder: bool) -> Path:
    """Where the lock of `output` lives: inside a folder output, beside a file output."""
    return output / LOCK_NAME if folder else output.with_name(output.name + ".lock")


class WriterLock:
    """Exclusive, non-blocking lock on `output` (a cache file, or a run folder with `folder`)."""

    def __init__(self, output: str | Path, folder: bool = False) -> None:
        self.output = Path(output)
        self.path = lock_path_for(Path(os.path.realpath(self.output)), folder)  # one lock whatever the route
        self._fd: int | None = None
        self._made: list[Path] = []  # folders this lock created, innermost first

    def acquire(self) -> WriterLock:
        with write_errors_as_bike(self.path):
            fd = self._open_locked()
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
            self._fd = fd
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode(), 0)
            except BaseException:
                self.release()  # a full disk: leave no lock file behind
                raise
        return self

    def _open_locked(self) -> int:
        """A descriptor of the lock file at `self.path`, flock'ed; OutputLockedError when another holds it."""
        missing = [folder for folder in (self.path.parent, *self.path.parent.parents) if not folder.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made = missing
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # a holder refused at start removed the folder it had made: make it again
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputLockedError(f"{self.output} is being written by {holder}; wait for it to finish "
                                        "or choose another output") from None
            if _same_file(fd, self.path):
                return fd
            os.close(fd)  # the holder removed the file after we opened it: lock the new one

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None
        for folder in self._made:  # innermost first; a folder that holds anything stays
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"process {record['pid']} on {record['host']} (started {record['started']})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process (it has just started)"
