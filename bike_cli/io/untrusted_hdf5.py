"""The one opener of every HDF5 file bike did not just write: feature caches, the part files of an
extraction in progress, search indexes. Such files are shared between people and machines, so they
are read as untrusted:

1. `check_hdf5` has a helper process check the file first (`hdf5_probe`: no link or storage that
   reaches another file, no virtual dataset, no filter, dtypes and ranks as the reader's rules say,
   every declared byte stored in the file, root attributes single values), reading every piece of
   metadata bike will read. The helper is bounded: each of its steps must report within
   `STALL_S` seconds (plus one per `BYTES_PER_S` bytes of file), else it is killed and the file
   refused in one line; its memory is capped; a stop of bike (SIGTERM, Ctrl-C) kills it. bike's own
   process only ever waits for it in `select`, where Python's signal handlers run, so a corrupted
   file can neither hang a stage nor keep it from stopping.
2. `open_hdf5` then opens the same file in this process and checks (by its open descriptor) that it
   is the very file that was checked: same device, inode, size, mtime and ctime (`Stamp`).

A verdict is kept per path, stamp and rules for the life of the process (and a reader hands its
`Stamp` to the DataLoader workers it is pickled to), so repeated opens pay for one check.
`hdf5_errors` turns whatever h5py raises on a later read into one `InputError` naming the file.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py

from bike_cli.config.files import file_kind
from bike_cli.errors import BikeError, InputError
from bike_cli.io.hdf5_probe import is_locked_error

log = logging.getLogger(__name__)

Rules = dict[str, tuple[str, tuple[int, ...]]]  # dataset name -> (dtype kinds, ranks), see hdf5_probe
STALL_S = 5.0  # the longest a step of the helper may take on a small file
BYTES_PER_S = 200e6  # and one more second per this many bytes of file (a chunk index grows with it)
START_S = 60.0  # the helper's start (Python and h5py imported), whatever the file
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder bike_cli is in: the same code
_HELPER_CODE = f"import sys; sys.path[0] = {_PACKAGE_ROOT!r}; from bike_cli.io.hdf5_probe import serve; serve()"


@dataclass(frozen=True)
class Stamp:
    """Which file, in which state: no copy tool can restore the ctime of a file it rewrote."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_PASSED: set[tuple[str, Stamp, str]] = set()  # (path, stamp, rules) whose check passed, this process


class _Helper:
    """The helper process of this process (a forked child starts its own)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.owner = -1
        self.pending = b""
        self.lock = threading.Lock()  # one request at a time on the pipes

    def _line(self, timeout: float) -> str | None:
        """The helper's next line; None when it wrote none within `timeout` s, "" when it ended."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return ""
                self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def _start(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _HELPER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
        self.owner, self.pending = os.getpid(), b""
        if self._line(START_S) != "ready":
            self.kill()
            raise BikeError(f"the helper process that checks HDF5 files did not start within {START_S:.0f} s")

    def ask(self, path: str, rules: Rules, limit: float) -> dict:
        """The helper's verdict on the file at `path` (kind "stalled" or "crashed" where it gave none)."""
        with self.lock:
            try:
                if self.proc is None or self.owner != os.getpid() or self.proc.poll() is not None:
                    self._start()
                log.debug("checking %s in helper process %d", path, self.proc.pid)
                request = {"path": path, "rules": rules, "limit": limit}
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
                while (line := self._line(limit)) == ".":
                    pass
            except BrokenPipeError:
                line = ""
            except BaseException:  # SIGTERM, Ctrl-C: the helper goes with us
                self.kill()
                raise
            return self._verdict(line)

    def _verdict(self, line: str | None) -> dict:
        """The verdict of the helper's last line (None: it stalled and is killed; "": it ended)."""
        if line is None:
            self.kill()
            return {"kind": "stalled"}
        if line == "":
            code = self.proc.wait()
            self.proc = None
            return {"kind": "crashed", "code": code}
        return json.loads(line)

    def kill(self) -> None:
        """End the helper (only the process that started it does)."""
        if self.proc is not None and self.owner == os.getpid():
            self.proc.kill()
            self.proc.wait()
        self.proc = None


_HELPER = _Helper()
atexit.register(_HELPER.kill)


def _stat(path: Path) -> os.stat_result:
    try:
        st = os.stat(path)
    except OSError as err:
        raise InputError(f"{path} cannot be read: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is {file_kind(path) or 'gone'}, not a regular file")
    return st


def check_hdf5(path: str | Path, rules: Rules, what: str) -> Stamp:
    """The stamp of the file at `path` once it passed the helper's check; InputError naming the file
    (as a malformed `what`, e.g. "feature cache") when it does not."""
    path = Path(path)
    st = _stat(path)
    stamp, key = Stamp.of(st), json.dumps(rules, sort_keys=True)
    if (str(path), stamp, key) in _PASSED:
        return stamp
    limit = STALL_S + st.st_size / BYTES_PER_S
    verdict = _HELPER.ask(str(path), rules, limit)
    if verdict.get("ok"):
        _PASSED.add((str(path), stamp, key))
        return stamp
    kind = verdict["kind"]
    if kind == "locked":
        raise InputError(in_use(path))
    if kind == "unreadable":
        raise InputError(f"{path} is not a readable HDF5 file: {verdict['reason']}")
    if kind == "stalled":
        reason = (f"reading its metadata did not finish within {limit:.0f} s (a corrupted HDF5 file can make "
                  "the HDF5 library loop for ever); it was stopped")
    elif kind == "crashed":
        reason = f"the HDF5 library crashed reading it (exit code {verdict['code']})"
    else:
        reason = verdict["reason"]
    raise InputError(f"{path} is a malformed {what}: {reason}")


def in_use(path: str | Path) -> str:
    """The message for a file another process holds open for writing (HDF5's own file lock)."""
    return (f"{path} is in use by another process, which holds it open for writing (another bike command "
            "writing it?): run again once that process has finished")


def open_hdf5(path: str | Path, rules: Rules, what: str, stamp: Stamp | None = None) -> h5py.File:
    """The file at `path`, open for reading once checked (`check_hdf5`; skipped when it still has
    `stamp`, the stamp of a check passed elsewhere, e.g. in the process a reader was pickled from)."""
    path = Path(path)
    for _ in range(3):  # a file replaced between the check and the open is checked again
        if stamp is None or Stamp.of(_stat(path)) != stamp:
            stamp = check_hdf5(path, rules, what)
        with hdf5_errors(path, what):
            h5 = h5py.File(path, "r")
        if file_stamp(h5) == stamp:
            return h5
        h5.close()
        stamp = None
    raise InputError(f"{path} keeps changing while it is opened; run again once nothing writes it")


def file_stamp(h5: h5py.File) -> Stamp:
    """The stamp of the file an open h5py file reads (by its descriptor, not its name)."""
    return Stamp.of(os.fstat(h5.id.get_vfd_handle()))


@contextmanager
def hdf5_errors(path: str | Path, what: str) -> Iterator[None]:
    """Whatever h5py raises reading a checked file (a chunk beyond its end...) as one InputError."""
    try:
        yield
    except BikeError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
        if is_locked_error(err):
            raise InputError(in_use(path)) from None
        raise InputError(f"{path} is a malformed {what} ({type(err).__name__}: {err})") from None
