"""The one opener of every HDF5 file bike did not just write, read as untrusted (docs/formats.md, "What a
reader refuses in a file from elsewhere"). `check_hdf5` has a helper process (`serve`) check the file
first, bounded in time and memory and killed on a stall or a stop (bike waits only in `select`, where
signal handlers run); `open_hdf5` then checks by the open descriptor that it is the file that passed
(`Stamp`). Helper protocol, JSON lines: `ready`, then per request a `.` line per step and one verdict."""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import resource
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py

from bike_cli.config.files import file_kind
from bike_cli.errors import BikeError, InputError

log = logging.getLogger(__name__)

Rules = dict[str, tuple[str, tuple[int, ...]]]  # dataset name -> (dtype kinds, ranks)
STRING = "T"  # the kind of a rule for text datasets (variable- or fixed-length strings)
STRING_SLAB = 65536  # strings read per step
MEMORY_LIMIT = 4 << 30  # the helper's address space: a declared-huge attribute fails, never swaps
_LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked"}
STALL_S = 5.0  # the longest a step of the helper may take on a small file
BYTES_PER_S = 200e6  # and one more second per this many bytes of file (a chunk index grows with it)
START_S = 60.0  # the helper's start (Python and h5py imported), whatever the file
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder bike_cli is in: the same code
_HELPER_CODE = f"import sys; sys.path[0] = {_PACKAGE_ROOT!r}; from bike_cli.io.untrusted_hdf5 import serve; serve()"


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
            if line is None:  # it stalled: killed
                self.kill()
                return {"kind": "stalled"}
            if line == "":  # it ended
                code, self.proc = self.proc.wait(), None
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



class Refused(Exception):
    """What is wrong with the file, in words; `kind` "unreadable" (not HDF5 at all) or "malformed"."""

    def __init__(self, reason: str, kind: str = "malformed") -> None:
        super().__init__(reason)
        self.kind = kind


def _check_storage(name: str, dset: h5py.Dataset, file_size: int) -> None:
    """Hard storage in this file, unfiltered, every declared byte stored."""
    plist = dset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise Refused(f"dataset /{name} is a virtual dataset (its data lies in other files); bike reads only "
                      "data stored in the file itself")
    if layout not in _LAYOUTS:
        raise Refused(f"dataset /{name} has HDF5 storage layout {layout}, not contiguous, chunked or compact")
    if plist.get_external_count():
        raise Refused(f"dataset /{name} keeps its data in another file (HDF5 external storage); bike reads "
                      "only data stored in the file itself")
    if plist.get_nfilters():
        names = ", ".join(plist.get_filter(i)[3].decode(errors="replace") or "?" for i in range(plist.get_nfilters()))
        raise Refused(f"dataset /{name} is stored through HDF5 filters ({names}); bike reads the unfiltered "
                      "data it writes")
    if dset.shape is None:
        raise Refused(f"dataset /{name} has no dataspace")
    declared = math.prod(dset.shape) * dset.id.get_type().get_size()
    stored = dset.id.get_storage_size()
    if stored < declared or stored > file_size:
        raise Refused(f"dataset /{name} declares shape {dset.shape} ({declared:,} bytes) but stores "
                      f"{stored:,} bytes in a file of {file_size:,}: bike reads datasets whose every row "
                      "is written")


def is_locked_error(err: BaseException) -> bool:
    """Whether h5py refused to open a file because another process holds it open for writing."""
    return isinstance(err, BlockingIOError) or "unable to lock file" in str(err)


def check_file(path: str, rules: Rules, step: Callable[[], None]) -> None:
    """Refused unless the file at `path` passes (docs/formats.md); `step` is called between reads."""
    try:
        h5 = h5py.File(path, "r")
    except Exception as err:  # noqa: BLE001 - whatever libhdf5 makes of the bytes
        raise Refused(str(err), "locked" if is_locked_error(err) else "unreadable") from None
    with h5:
        file_size = os.fstat(h5.id.get_vfd_handle()).st_size
        for name in h5.attrs:
            step()
            shape = h5.attrs.get_id(name).shape
            if shape is None:
                raise Refused(f"attribute {name} holds no value (an empty dataspace)")
            if shape != ():
                raise Refused(f"attribute {name} holds an array of shape {shape}, not one value")
            h5.attrs[name]  # the value itself (variable-length text lives in the global heap)
        for name, (kinds, ranks) in rules.items():
            step()
            link = h5.get(name, getlink=True)
            if link is None:
                continue  # a missing dataset is named by the reader, with the others missing
            if isinstance(link, h5py.SoftLink):
                raise Refused(f"/{name} is a soft link to {link.path}, not a dataset; bike reads only datasets "
                              "stored under their own name")
            if not isinstance(link, h5py.HardLink):
                raise Refused(f"/{name} is a link to another file ({type(link).__name__}); bike reads only data "
                              "stored in the file itself")
            dset = h5[name]
            if not isinstance(dset, h5py.Dataset):
                raise Refused(f"/{name} is a {type(dset).__name__.lower()}, not a dataset")
            _check_storage(name, dset, file_size)
            dtype = dset.dtype
            kind = STRING if h5py.check_string_dtype(dtype) is not None else (
                "V" if dtype.fields is not None or dtype.subdtype is not None else dtype.kind)
            if kind not in kinds:
                raise Refused(f"dataset /{name} is of dtype {dset.dtype}; "
                              f"{'text' if kinds == STRING else 'numbers of kind ' + kinds} expected")
            if dset.ndim not in ranks:
                raise Refused(f"dataset /{name} has shape {dset.shape}; {' or '.join(map(str, ranks))} "
                              f"dimension(s) expected")
            if kind == STRING:
                for start in range(0, dset.shape[0], STRING_SLAB):
                    step()
                    dset[start:start + STRING_SLAB]


def serve() -> None:
    """Answer requests from stdin until it ends (the helper process's main loop)."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):  # a system that caps no address space (macOS): the time bound remains
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout
    alarm_s = 0

    def step() -> None:
        signal.alarm(alarm_s)  # SIGALRM's default action ends the process, even inside a C call
        out.write(".\n")
        out.flush()

    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        alarm_s = 2 * math.ceil(request["limit"]) + 1
        rules = {name: (kinds, tuple(ranks)) for name, (kinds, ranks) in request["rules"].items()}
        try:
            check_file(request["path"], rules, step)
            verdict: dict = {"ok": True}
        except Refused as err:
            verdict = {"kind": err.kind, "reason": str(err)}
        except Exception as err:  # noqa: BLE001 - RuntimeError, KeyError, MemoryError... from a corrupted file
            verdict = {"kind": "malformed", "reason": f"{type(err).__name__}: {err}"}
        signal.alarm(0)
        out.write(json.dumps(verdict) + "\n")
        out.flush()
