"""Video lists: the files that name a dataset's videos and their labels (text, CSV, Kinetics CSV) and the
test-split lists, read and checked. Every format rule: docs/formats.md, "Video lists"."""

from __future__ import annotations

import csv
import difflib
import functools
import gc
import glob
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bike_cli.data.lexicons import normalise_name, read_lines
from bike_cli.errors import InputError, location

log = logging.getLogger(__name__)


def nonblank(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped text) of every non-blank line."""
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text:
            yield number, text


def csv_cells(source: Path, number: int, text: str) -> list[str]:
    """The CSV cells of line `number` of `source`; InputError naming the line when the csv module refuses
    it (a cell over its field limit of 128 KiB, a stray quote in strict mode)."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error as err:
        raise InputError(f"{location(source, number)}: malformed CSV line of {len(text)} characters ({err})") from None


MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4096  # Linux's NAME_MAX and PATH_MAX


@dataclass(frozen=True)
class VideoEntry:
    """One video of a list."""

    video_id: str  # unique key: the path as written in the list (Kinetics: the file stem)
    path: Path  # resolved file path
    labels: tuple[int, ...]  # class indices; () when unknown
    line: int  # 1-based line number in the list file (for messages)


@dataclass(frozen=True)
class VideoList:
    """The videos of a list file, in file order."""

    entries: list[VideoEntry]
    source: Path
    format: str  # 'text' | 'csv' | 'kinetics'
    multilabel: bool  # True when any entry has more than one label

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> VideoEntry:
        return self.entries[index]


def labels_array(entries: Sequence[VideoEntry], num_classes: int, multilabel: bool) -> np.ndarray:
    """The entries' labels: int64 [n] (-1 when unknown), or uint8 multi-hot [n, K] when `multilabel`."""
    if not multilabel:
        return np.array([e.labels[0] if e.labels else -1 for e in entries], dtype=np.int64)
    hot = np.zeros((len(entries), num_classes), dtype=np.uint8)  # [n, K]
    for row, e in enumerate(entries):
        hot[row, list(e.labels)] = 1
    return hot


def check_path(source: Path, number: int, path: Path) -> Path:
    """`path`, after checking it is a name the file system can take; InputError naming file:line."""
    text = str(path)
    where = location(source, number)
    if "\0" in text:
        raise InputError(f"{where}: the path {text!r} holds a NUL byte")
    if len(text) > MAX_NAME_BYTES // 4:  # shorter names cannot exceed the limits, even in 4-byte UTF-8
        if len(os.fsencode(text)) > MAX_PATH_BYTES:
            raise InputError(f"{where}: the path is longer than {MAX_PATH_BYTES} bytes ({text[:80]!r}...)")
        long = next((part for part in path.parts if len(os.fsencode(part)) > MAX_NAME_BYTES), None)
        if long is not None:
            raise InputError(f"{where}: the path component {long[:60]!r}... is longer than {MAX_NAME_BYTES} bytes")
    return path


def check_unique_videos(source: Path, entries: list[VideoEntry]) -> list[VideoEntry]:
    """The entries, each video file once: InputError naming both lines when a video id appears twice;
    the same file under other spellings (`../x.mp4`, `/abs/x.mp4`, `v/../x.mp4`) is kept at its first
    line, with one warning naming the lines and spellings (an error where their labels differ)."""
    seen: dict[str, int] = {}
    for entry in entries:
        if (first := seen.setdefault(entry.video_id, entry.line)) != entry.line:
            raise InputError(f"{location(source, entry.line)}: video {entry.video_id!r} is listed twice "
                             f"(lines {first} and {entry.line})")
    files: dict[str, list[VideoEntry]] = {}
    folders: dict[str, str] = {}  # resolved once per folder: a list has few folders and many videos
    for entry in entries:
        folder, name = os.path.split(entry.path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        files.setdefault(os.path.join(folders[folder], name), []).append(entry)
    if len(files) == len(entries):
        return entries
    dropped = set()
    for spellings in (group for group in files.values() if len(group) > 1):
        _warn_respelled(source, spellings)
        dropped.update(id(entry) for entry in spellings[1:])
    return [entry for entry in entries if id(entry) not in dropped]


def _warn_respelled(source: Path, spellings: list[VideoEntry]) -> None:
    """Warn that one file is listed under several spellings; InputError where their labels differ."""
    first, *others = spellings
    lines = [str(e.line) for e in spellings]
    named = f"lines {', '.join(lines[:-1])} and {lines[-1]}"
    written = ", ".join(repr(e.video_id) for e in spellings)
    conflict = next((e for e in others if e.labels != first.labels), None)
    if conflict is not None:
        raise InputError(f"{location(source, conflict.line)}: {written} are one video ({first.path}) with "
                         f"different labels ({named})")
    log.warning("%s: %s name one video under %d spellings (%s): read once, as %r (line %d)", source, named,
                len(spellings), written, first.video_id, first.line)


_INT = re.compile(r"[+-]?\d+")


class LabelParser:
    """Turns label tokens into class indices; errors name the list file and line."""

    def __init__(self, source: Path, class_names: Sequence[str] | None) -> None:
        self.source = source
        self.names = list(class_names) if class_names is not None else None
        self.exact = {name: i for i, name in enumerate(self.names or ())}
        self.normal: dict[str, list[int]] = {}
        for i, name in enumerate(self.names or ()):
            self.normal.setdefault(normalise_name(name), []).append(i)
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
            index = int(token)
            if index < 0:
                raise InputError(f"{where}: label {index} is negative (class indices start at 0)")
            if self.names is not None and index >= len(self.names):
                raise InputError(f"{where}: label {index} is out of range for {len(self.names)} classes "
                                 f"(0..{len(self.names) - 1})")
            return index
        if self.names is None:
            raise InputError(
                f"{where}: label {token!r} is a class name but no class names were given; "
                "pass --classes FILE"
            )
        if token in self.exact:
            return self.exact[token]
        hits = self.normal.get(normalise_name(token), [])
        if len(hits) > 1:
            choices = ", ".join(repr(self.names[i]) for i in hits)
            raise InputError(f"{where}: label {token!r} matches several classes: {choices}")
        if not hits:  # up to three close matches
            originals = {normalise_name(name): name for name in reversed(self.names)}
            close = difflib.get_close_matches(normalise_name(token), list(originals), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(originals[c]) for c in close)}?" if close else " (no close match)"
            raise InputError(f"{where}: unknown class name {token!r}{hint}")
        return hits[0]


def parse_text(source: Path, lines: list[str], root: Path, parser: LabelParser) -> list[VideoEntry]:
    """Entries of an mmaction-style `relpath [label ...]` list."""
    entries = []
    for number, line in enumerate(lines, 1):
        parts = line.split(None, 1)
        if parts:
            video, labels = parts[0], parser.labels(parts[1] if len(parts) > 1 else "", number)
            entries.append(VideoEntry(video, check_path(source, number, root / video), labels, number))
    return entries


PATH_COLUMNS = ("path", "video", "filename")
LABEL_COLUMNS = ("label", "labels", "class")


def parse_csv(source: Path, lines: list[str], root: Path, parser: LabelParser) -> list[VideoEntry]:
    """Entries of a CSV list with a path column and an optional label column."""
    columns, rows = csv_table(source, lines)
    path_name = next(name for name in PATH_COLUMNS if name in columns)
    path_i = columns[path_name]
    label_i = next((columns[name] for name in LABEL_COLUMNS if name in columns), None)
    entries = []
    for number, cells in rows:
        video = cells[path_i].strip()
        if not video:
            raise InputError(f"{location(source, number)}: row has no path (column {path_name!r})")
        labels = parser.labels(cells[label_i], number, ";") if label_i is not None else ()
        entries.append(VideoEntry(video, check_path(source, number, root / video), labels, number))
    return entries


def csv_table(source: Path, lines: list[str]) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """(lower-case column name -> index, data rows) of a CSV list with a header."""
    rows = _csv_rows(source, lines)
    _, header = next(rows)
    columns: dict[str, int] = {}
    for i, name in enumerate(header):
        columns.setdefault(name.strip().lower(), i)
    return columns, rows


def _csv_rows(source: Path, lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of the non-blank CSV rows, each as wide as the first (the header).

    The csv module reads the file's text as a whole, so a quoted field may hold a line break (kept
    in the path) and a quote left open is reported at the line where it opens, not taken silently
    as one long path swallowing the rest of the file."""
    reader = csv.reader(io.StringIO("\n".join(lines)), strict=True)
    width, start = 0, 1
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                start = reader.line_num + 1
                continue
            width = width or len(cells)  # the header's
            if len(cells) != width:  # a short row is padded with '' to the header width
                if any(cell.strip() for cell in cells[width:]):
                    raise InputError(f"{location(source, reader.line_num)}: row has {len(cells)} fields but the header "
                                     f"has {width} (quote values that contain commas)")
                cells = cells[:width] + [""] * (width - len(cells))
            yield start, cells
            start = reader.line_num + 1
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise InputError(f"{location(source, start)}: a quoted field opened on this line is never closed "
                             "(unbalanced '\"'): it runs to the end of the file") from None
        raise InputError(f"{location(source, reader.line_num)}: malformed CSV ({e})") from None


KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")


def parse_kinetics(source: Path, lines: list[str], root: Path, parser: LabelParser) -> list[VideoEntry]:
    """Entries of an official Kinetics CSV (`label,youtube_id,time_start,time_end,split`)."""
    columns, rows = csv_table(source, lines)
    id_i, start_i, end_i = (columns[name] for name in KINETICS_COLUMNS)
    label_i = columns.get("label")
    find = _kinetics_finder(root)
    entries = []
    for number, cells in rows:
        stem = _kinetics_stem(source, number, cells[id_i], cells[start_i], cells[end_i])
        label = cells[label_i].strip() if label_i is not None else ""
        labels = (parser.index(label, number),) if label else ()
        entries.append(VideoEntry(stem, check_path(source, number, find(stem + ".mp4", label)), labels, number))
    return entries


def _kinetics_stem(source: Path, number: int, youtube_id: str, start: str, end: str) -> str:
    """`{youtube_id}_{time_start:06d}_{time_end:06d}`: the stem of a Kinetics file name."""
    youtube_id, start, end = youtube_id.strip(), start.strip(), end.strip()
    if youtube_id and start.isdigit() and end.isdigit() and (start + end).isascii():
        return f"{youtube_id}_{start.lstrip('0').zfill(6)}_{end.lstrip('0').zfill(6)}"
    if not youtube_id:
        raise InputError(f"{location(source, number)}: row has no youtube_id")
    start_ok = start.isdigit() and start.isascii()
    column, value = ("time_end", end) if start_ok else ("time_start", start)
    raise InputError(
        f"{location(source, number)}: {column} {value!r} is not a whole number of seconds"
    )


def _kinetics_finder(root: Path) -> Callable[[str, str], Path]:
    """find(file, label): `root/file`, `root/<label>/file` or `root/<label_with_underscores>/file`, where the
    file is (`root/file` when it is nowhere); each folder is listed once."""
    root_names = _listing(root)

    @functools.cache
    def folders(label: str) -> list[tuple[Path, frozenset[str]]]:  # the existing, non-empty class folders
        spellings = dict.fromkeys((label, label.replace(" ", "_")))
        return [(folder, names) for folder in map(root.joinpath, spellings) if (names := _listing(folder))]

    def find(name: str, label: str) -> Path:
        if name not in root_names and label:
            return next((folder / name for folder, names in folders(label) if name in names), root / name)
        return root / name

    return find


def _listing(folder: Path) -> frozenset[str]:
    """The names in a folder; empty when it cannot be listed."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return frozenset()


def read_video_list(path: str | Path, root: str | Path | None = None,
                    class_names: Sequence[str] | None = None) -> VideoList:
    """Read a text, CSV or Kinetics video list; relative paths resolve against `root` (default: the list's
    folder). Label names need `class_names`."""
    source = Path(path)
    lines = read_lines(source, "video list")
    fmt = _detect_format(source, lines)
    if root is not None and not Path(root).is_dir():
        raise InputError(f"video root is not a folder: {Path(root)}")
    base = (source.parent if root is None else Path(root)).absolute()  # where relative paths resolve
    with _gc_paused():
        entries = _PARSERS[fmt](source, lines, base, LabelParser(source, class_names))
    if not entries:
        raise InputError(f"{source}: the video list has no videos")
    entries = check_unique_videos(source, entries)
    multilabel = any(len(entry.labels) > 1 for entry in entries)
    log.info("read %d videos from %s (%s format, root %s)", len(entries), source, fmt, base)
    return VideoList(entries, source, fmt, multilabel)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many entries (no cycles are made): its passes over
    the growing list doubled the time of a 240,000-line list."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _detect_format(source: Path, lines: list[str]) -> str:
    """'kinetics', 'csv' or 'text', from the first non-blank line and the extension."""
    first_line, first = next(nonblank(lines), (None, ""))
    if first_line is None:
        raise InputError(f"{source}: the video list is empty")
    is_csv = source.suffix.lower() == ".csv"
    if is_csv or "," in first:
        header = {cell.strip().lower() for cell in csv_cells(source, first_line, first)}
        if header.issuperset(KINETICS_COLUMNS):
            return "kinetics"
        if header.intersection(PATH_COLUMNS):
            return "csv"
        if is_csv:
            raise InputError(
                f"{location(source, first_line)}: CSV header {first!r} names no path column "
                f"(one of {', '.join(PATH_COLUMNS)}) and is not a Kinetics header "
                f"({','.join(KINETICS_COLUMNS)})"
            )
    return "text"


_PARSERS = {"text": parse_text, "csv": parse_csv, "kinetics": parse_kinetics}


HMDB_SPLIT_FILE = re.compile(r"(?P<cls>.+)_test_split(?P<split>\d+)\.txt")
HMDB_TEST = "2"  # the tag of a test video in an HMDB-51 split file (1 = train, 0 = unused)


@dataclass(frozen=True)
class SplitList:
    """The videos of one test split: their ids as the list writes them, in list order."""

    name: str  # the list file, or `<folder or pattern> split N` for HMDB-51's per-class files
    video_ids: list[str]


def read_split_lists(sources: Sequence[str | Path]) -> list[SplitList]:
    """The split lists `sources` name, in order: a video-list file is one list; a folder, a glob pattern or
    HMDB-51 `*_test_split<N>.txt` files give one list per split number N (at the first source naming it)."""
    if not sources:
        raise InputError("--protocol splits needs at least one --split-lists file")
    order: list[str | int] = []  # a list file's name, or an HMDB split number
    hmdb: dict[int, tuple[str, list[Path]]] = {}  # split number -> (the source first naming it, its files)
    for source in map(str, sources):
        for path in _split_files(source):
            match = HMDB_SPLIT_FILE.fullmatch(path.name)
            key = str(path) if match is None else int(match["split"])
            if match is None or key not in hmdb:
                order.append(key)
            if match is not None:
                hmdb.setdefault(key, (source, []))[1].append(path)
    return [_hmdb_split(f"{hmdb[key][0]} split {key}", hmdb[key][1]) if isinstance(key, int)
            else SplitList(key, [entry.video_id for entry in read_video_list(key)]) for key in order]


def _split_files(source: str) -> list[Path]:
    """The files one --split-lists value names: itself, a folder's HMDB-51 split files, or a glob's matches."""
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if HMDB_SPLIT_FILE.fullmatch(p.name) and p.is_file())
        if not found:
            raise InputError(f"split list folder {source} holds no HMDB-51 split files (<class>_test_split<N>.txt)")
        return found
    if any(c in source for c in "*?[") and not path.exists():
        found = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
        if not found:
            raise InputError(f"split list pattern {source!r} matches no file")
        return found
    return [path]


def _hmdb_split(name: str, files: list[Path]) -> SplitList:
    """The test videos (tag 2) of one HMDB-51 split's per-class files; a class given twice is an error."""
    classes: dict[str, Path] = {}
    ids: list[str] = []
    for path in sorted(files):
        cls = HMDB_SPLIT_FILE.fullmatch(path.name)["cls"]
        if cls in classes:
            raise InputError(f"{name}: class {cls!r} is given twice ({classes[cls]} and {path})")
        classes[cls] = path
        for number, text in nonblank(read_lines(path, "HMDB-51 split file")):
            parts = text.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise InputError(f"{location(path, number)}: expected 'video.avi 0|1|2' (an HMDB-51 split file), "
                                 f"got {text!r}")
            if parts[1] == HMDB_TEST:
                ids.append(parts[0])
    if not ids:
        raise InputError(f"{name}: its {len(files)} HMDB-51 split files mark no test video (tag 2)")
    return SplitList(name, ids)


def video_stem(video_id: str) -> str:
    """A video id's file stem: no folder, no extension ('ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi' ->
    'v_ApplyEyeMakeup_g01_c01')."""
    name = video_id.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def match_videos(listed: Sequence[str], video_ids: Sequence[str], what: str, where: str) -> np.ndarray:
    """Rows of `video_ids` the `listed` videos are, in list order: the same id, else the one id of the same
    file stem. InputError naming `what` (the list) and the video when a listed video is missing from
    `where`, matches several of its videos by its stem, or is listed twice (two spellings of one video)."""
    exact = {vid: i for i, vid in enumerate(video_ids)}
    stems: dict[str, list[int]] = {}
    for i, vid in enumerate(video_ids):
        stems.setdefault(video_stem(vid), []).append(i)
    rows, seen = [], {}
    for vid in listed:
        row = exact.get(vid)
        if row is None:
            hits = stems.get(video_stem(vid), [])
            if not hits:
                missing = [v for v in listed if v not in exact and video_stem(v) not in stems]
                raise InputError(f"{what}: video {vid!r} is not in {where} ({len(missing)} of its {len(listed)} "
                                 "videos are missing; ids are matched as written, else by file stem)")
            if len(hits) > 1:
                raise InputError(f"{what}: video {vid!r} matches {len(hits)} videos of {where} by its file stem "
                                 f"({video_ids[hits[0]]!r}, {video_ids[hits[1]]!r}): write the ids as {where} does")
            row = hits[0]
        if row in seen:
            raise InputError(f"{what}: {seen[row]!r} and {vid!r} are the same video ({video_ids[row]!r} of {where})")
        seen[row] = vid
        rows.append(row)
    return np.array(rows, dtype=np.int64)
