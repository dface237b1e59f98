"""One guard for every path a command reads and writes (docs/formats.md, "No output is an input" and
"One writer per output"): `PathGuard`, the writer lock `WriterLock` (an exclusive `fcntl.flock` the
kernel drops when its holder dies), and the shape of an output option (`check_file_output` / `_folder_`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from bike_cli.config.files import FOLDER, file_kind, not_regular
from bike_cli.errors import BikeError, InputError
from bike_cli.io.atomic import TMP_SUFFIX, write_errors_as_bike
from bike_cli.io.csv_meta import meta_path

PathOptions = Mapping[str, "Path | str | Iterable[Path | str] | None"]

CHECKPOINT_NAMES = ("best.pt", "last.pt")  # what a run-folder checkpoint is read from (io.checkpoints)
CACHE_SUFFIXES = (".h5", ".hdf5")
# `.NAME.PID.HEX.tmp`: the temporary file of bike's atomic writer (io.atomic.temp_path)
BIKE_TEMP = re.compile(r"^\.(?P<name>.+)\.\d+\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX) + "$")
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
            self._fd = self._open_locked()
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
            try:
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, json.dumps(record).encode(), 0)
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


def file_or_none(value: str | Path | None) -> Path | None:
    """`value` as an input path when something other than a folder is there (`--pretrained` may be a
    tag): a FIFO named as `--pretrained` is then refused by the guard, not looked up as a tag."""
    return Path(value) if value and file_kind(value) not in (None, FOLDER) else None


def _inode(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file at `path` (hard links share them), None where there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _keys(path: Path) -> set[tuple]:
    """The resolved path, and the device and inode where the file exists."""
    keys, inode = {("path", os.path.realpath(path))}, _inode(path)
    if inode:
        keys.add(("inode", *inode))
    return keys


def _flatten(options: PathOptions | None) -> list[tuple[str, Path]]:
    pairs = []
    for option, value in (options or {}).items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, Path)) else list(value)
        pairs += [(option, Path(v)) for v in values if v is not None]
    return pairs


def owned_files(path: Path) -> list[tuple[str, Path]]:
    """The files an input owns besides itself, each with what it is to the input."""
    if path.is_dir():
        return [(f"the checkpoint {name} in", path / name) for name in CHECKPOINT_NAMES]
    if path.suffix == ".csv":
        return [("the .meta.json sidecar of", meta_path(path))]
    if path.suffix in CACHE_SUFFIXES:
        return [("the parts folder of", path.with_name(path.name + ".parts")),
                ("the failures CSV of", path.with_name(path.stem + ".failures.csv")),
                ("the lock file of", lock_path_for(path, folder=False))]
    return []


def _under(path: str, folder: str) -> bool:
    return path != folder and path.startswith(folder.rstrip(os.sep) + os.sep)


class PathGuard:
    """The checked inputs and outputs of one command (see the module docstring).

    inputs/outputs: option name -> path(s); listed: inputs named in a list file (videos), compared
    by device and inode with the outputs that exist; trees: output folders the command replaces."""

    def __init__(self, inputs: PathOptions, outputs: PathOptions, *, listed: PathOptions | None = None,
                 trees: PathOptions | None = None) -> None:
        self.inputs, self.outputs, self.trees = _flatten(inputs), _flatten(outputs), _flatten(trees)
        for option, path in self.inputs:
            if (problem := not_regular(path, option, folders=True)) is not None:
                raise InputError(problem)
        self._declared = {os.path.realpath(p) for _, p in self.outputs + self.trees}
        self._check_outputs()
        self._check_trees()
        self._check_listed(_flatten(listed))

    def _check_outputs(self) -> None:
        seen: dict[tuple, tuple[str, str, Path]] = {}
        for option, path in self.inputs:
            for key in _keys(path):
                seen.setdefault(key, ("is the same file as", option, path))
        for option, path in self.inputs:
            for what, owned in owned_files(path):
                for key in _keys(owned):
                    seen.setdefault(key, (f"is {what}", option, path))
        roles = {}
        for option, path in self.outputs:
            keys = _keys(path)
            hit = next((seen[key] for key in keys if key in seen), None)
            if hit is not None:
                relation, other, other_path = hit
                role = roles.get((other, other_path), "input")
                raise InputError(f"{option} {path} {relation} {other} {other_path} (an {role} of this run): "
                                 f"writing it would destroy the {role}; choose another {option}")
            for key in keys:
                seen[key] = ("is the same file as", option, path)
            roles[(option, path)] = "output"

    def _check_trees(self) -> None:
        for option, tree in self.trees:
            folder = os.path.realpath(tree)
            for other, path in self.inputs:
                if _under(os.path.realpath(path), folder):
                    raise InputError(f"{other} {path} is inside {option} {tree}, which this run replaces: "
                                     f"it would destroy the input; move it out of {tree}")

    def _check_listed(self, listed: list[tuple[str, Path]]) -> None:
        existing = {inode: (option, path) for option, path in self.outputs if (inode := _inode(path))}
        if not existing:
            return  # an output that does not exist yet cannot be a file that is read
        for other, path in listed:
            hit = existing.get(_inode(path))
            if hit is not None:
                option, out = hit
                raise InputError(f"{option} {out} is the same file as {path}, {other} (an input of this run): "
                                 f"writing it would destroy the input; choose another {option}")

    def _is_declared(self, path: Path) -> bool:
        resolved = os.path.realpath(path)
        return resolved in self._declared or any(_under(resolved, os.path.realpath(t)) for _, t in self.trees)

    def discard(self, *paths: Path) -> None:
        """Delete outputs of an earlier run (files, or folders of `trees`); only declared outputs."""
        for path in paths:
            if not self._is_declared(path):
                raise BikeError(f"internal error: {path} is not an output of this command; not deleting it")
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def sweep_temps(self, folder: Path, names: Iterable[str] = (), *, of: str | None = None) -> list[Path]:
        """Remove the temporary files bike's dead writers left in `folder` (hold its lock): `.NAME.PID.HEX.tmp`
        (with `of`, only NAME `of`) and older bike's fixed `NAME.tmp` of the `names` given; a user's stay."""
        legacy = {f"{name}{TMP_SUFFIX}" for name in names}
        if not folder.is_dir():
            return []
        stale = [entry for entry in folder.iterdir() if entry.is_file()
                 and ((m := BIKE_TEMP.match(entry.name)) and of in (None, m["name"]) or entry.name in legacy)]
        for entry in stale:
            entry.unlink(missing_ok=True)
        return stale

    def sweep_temps_of(self, path: Path) -> list[Path]:
        """Remove the temporary files of dead writers of the one output `path` (hold its lock)."""
        return self.sweep_temps(path.parent, [path.name], of=path.name)

    @contextlib.contextmanager
    def holding(self, *paths: Path | None) -> Iterator[None]:
        """Hold the WriterLock of each output file `paths` (None: skipped) for the block; once all are held,
        remove the temporary files their dead writers left (a killed run's `.NAME.PID.HEX.tmp`)."""
        outputs = [path for path in paths if path is not None]
        for path in outputs:
            if not self._is_declared(path):
                raise BikeError(f"internal error: {path} is not an output of this command; not locking it")
        with contextlib.ExitStack() as stack:
            for path in outputs:
                stack.enter_context(WriterLock(path))
            for path in outputs:
                self.sweep_temps_of(path)
            yield


def check_file_output(option: str, path: Path) -> None:
    """An output file must not be an existing folder."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")


def check_folder_output(option: str, path: Path) -> None:
    """An output folder must not be an existing file, nor be inside one (`FILE/sub`)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is an existing file; give a folder (new or one bike wrote)")
    above = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if above is not None and not above.is_dir():
        raise InputError(f"{option} {path}: {above} is an existing file, so no folder can be made in it; "
                         "give a folder (new or one bike wrote)")
