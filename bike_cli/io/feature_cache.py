"""The HDF5 frame-feature cache of `bike extract-features` (layout and parts folder: docs/formats.md):
`CacheMeta`, the reader `FeatureCache`, the part files, `merge` and the failures CSV. HDF5 is not
crash-safe: each finished batch is a part file, and the cache is only ever renamed into place."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np

from bike_cli.errors import CacheMismatchError, InputError
from bike_cli.io.atomic import TMP_SUFFIX, atomic_path, atomic_write, ensure_free_space, write_bytes, write_text
from bike_cli.io.untrusted_hdf5 import STRING, Rules, file_stamp, hdf5_errors, open_hdf5

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KIND = "bike-feature-cache"
WHAT = "feature cache"  # in messages: "PATH is a malformed feature cache: ..."
PART = "part file"
STR_DTYPE = h5py.string_dtype("utf-8")  # the strings of every dataset
_ADDED_LATER = ("resize_mode", "interpolation", "compat", "visual_sha256")  # older caches lack them: defaults apply
UNKNOWN_LABEL = -1  # the single-label class index of a video whose class is not known
# what the helper process checks before a file is opened here (`untrusted_hdf5`): kinds and ranks
DATASET_RULES: Rules = {"embeddings": ("f", (4,)), "video_ids": (STRING, (1,)), "labels": ("iubf", (1, 2)),
                        "num_frames": ("iu", (1,)), "decoders": (STRING, (1,))}
FAILURE_COLUMNS = ("video_id", "path", "reason")
_ROWS = ("embeddings", "labels", "video_ids", "num_frames", "decoders")  # the row datasets, in merge's order
_TEXT = ("video_ids", "decoders")
PART_RULES: Rules = {**DATASET_RULES, "list_index": ("iu", (1,)), "failure_index": ("iu", (1,)),
                     **{f"failure_{name}": (STRING, (1,)) for name in FAILURE_COLUMNS}}


@dataclass(frozen=True)
class CacheMeta:
    """How a cache was made. The fields in `COMPAT_FIELDS` must match for a run to resume it."""

    model_name: str
    pretrained: str
    checkpoint_sha256: str | None
    quick_gelu: bool
    image_size: int
    embed_dim: int
    frames: int
    clips: int
    crops: int
    sampling_mode: str
    seed: int
    decoder: str
    multilabel: bool
    num_classes: int
    class_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    bike_version: str = ""
    resize_mode: str = "shortest"  # how the model's centre view was made (single-crop layouts)
    interpolation: str = "bicubic"  # the model's preprocess config, recorded (the decoder's scaler resized)
    schema_version: int = SCHEMA_VERSION
    compat: str = "bike"  # the --compat profile (bike_cli.config.profile); absent in older caches: bike
    visual_sha256: str | None = None  # digest of the image tower's weights (models.clip)

    COMPAT_FIELDS = (
        "model_name", "pretrained", "checkpoint_sha256", "quick_gelu", "image_size", "embed_dim",
        "frames", "clips", "crops", "sampling_mode", "seed", "decoder", "multilabel",
        "num_classes", "class_names", "resize_mode", "schema_version", "compat",
    )

    @property
    def num_views(self) -> int:
        """V = clips * crops: the views of each video."""
        return self.clips * self.crops

    def to_attrs(self) -> dict:
        """The HDF5 attributes of a cache made this way (lists as JSON strings, None as an empty string)."""
        attrs = {"kind": KIND}
        for key, value in asdict(self).items():
            if isinstance(value, (tuple, list)):
                value = json.dumps(list(value))
            attrs[key] = "" if value is None else value  # HDF5 has no null: None is stored as ""
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict, source: Path) -> CacheMeta:
        """Read back `to_attrs` (fields older caches lack take their defaults); InputError unless a bike
        cache of this schema."""
        if attrs.get("kind") != KIND:
            raise InputError(f"{source} is not a bike feature cache (no kind={KIND!r} attribute)")
        version = int(attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise InputError(f"{source} has cache schema version {version}; this bike reads {SCHEMA_VERSION}")
        values = {}
        for f in fields(cls):
            if f.name not in attrs and f.name in _ADDED_LATER:  # caches written before the field existed
                continue
            raw = attrs[f.name]
            if isinstance(raw, bytes):
                raw = raw.decode()
            if f.name in ("class_names", "mean", "std"):
                raw = tuple(json.loads(raw))
            elif f.name in ("checkpoint_sha256", "visual_sha256"):
                raw = raw or None
            elif isinstance(raw, np.generic):
                raw = raw.item()
            values[f.name] = raw
        return cls(**values)

    def check_compatible(self, other: CacheMeta, where: Path) -> None:
        """Raise CacheMismatchError naming each setting that differs from `other` (found at `where`)."""
        names = list(self.COMPAT_FIELDS)
        if self.sampling_mode == other.sampling_mode == "test":
            names.remove("seed")  # the seed only matters for random (train-mode) sampling
        if self.checkpoint_sha256 and other.checkpoint_sha256:
            names.remove("pretrained")  # the same file content, wherever it lies now
        diffs = [
            f"{name}: existing {getattr(other, name)!r} vs now {getattr(self, name)!r}"
            for name in names
            if getattr(self, name) != getattr(other, name)
        ]
        if diffs:
            shown = "; ".join(d if len(d) < 200 else d[:200] + "..." for d in diffs)
            raise CacheMismatchError(
                f"{where} was made with other settings ({shown}). Use another --out, or --overwrite "
                "to discard it."
            )


def _malformed(path: Path, what: str) -> InputError:
    return InputError(f"{path} is a malformed feature cache: {what}")


def _check_layout(h5: h5py.File, meta: CacheMeta, path: Path, need_rows: bool) -> None:
    """InputError unless every dataset is there, with N rows (N > 0 if `need_rows`) and the shapes and
    dtypes `meta` describes."""
    missing = [name for name in DATASET_RULES if name not in h5]
    if missing:
        raise _malformed(path, f"dataset(s) {', '.join('/' + m for m in missing)} missing")
    rows = {name: h5[name].shape[0] if h5[name].shape else 0 for name in DATASET_RULES}
    n = rows["embeddings"]
    for name, count in rows.items():
        if count != n:
            short, row = (name, count) if count < n else ("embeddings", n)
            raise _malformed(path, f"dataset /{name} has {count} rows, /embeddings {n}: row {row} is missing "
                                   f"from /{short}")
    if need_rows and n == 0:
        raise InputError(f"{path} holds no videos (dataset /video_ids has no rows); this needs at least one")
    emb = h5["embeddings"]
    if emb.dtype.kind != "f":
        raise _malformed(path, f"dataset /embeddings is of dtype {emb.dtype}; features are floats (float16)")
    expected = (meta.num_views, meta.frames, meta.embed_dim)
    if emb.shape[1:] != expected:
        raise _malformed(path, f"dataset /embeddings has rows of shape {emb.shape[1:]}, its attributes say "
                               f"(views, frames, dim) = {expected}")
    if meta.class_names and len(meta.class_names) != meta.num_classes:
        raise _malformed(path, f"its attributes name {len(meta.class_names)} classes but say num_classes = "
                               f"{meta.num_classes}")


def _check_labels(labels: np.ndarray, meta: CacheMeta, path: Path) -> None:
    """InputError naming the first row of /labels that is not a label of the cache's `meta.num_classes` classes."""
    k = meta.num_classes
    if labels.dtype.kind not in ("iub" if meta.multilabel else "iu"):
        raise _malformed(path, f"dataset /labels is of dtype {labels.dtype}; labels are integers")
    if meta.multilabel:
        if labels.shape[1:] != (k,):
            raise _malformed(path, f"dataset /labels has rows of shape {labels.shape[1:]}; multi-label rows "
                                   f"are one 0/1 column per class, ({k},) for its {k} classes")
        bad = np.flatnonzero(((labels != 0) & (labels != 1)).any(1))
        if bad.size:
            raise _malformed(path, f"dataset /labels row {bad[0]} holds {labels[bad[0]].tolist()}; multi-label "
                                   "rows hold 0s and 1s")
        return
    if labels.ndim != 1:
        raise _malformed(path, f"dataset /labels has rows of shape {labels.shape[1:]}; single-label rows are "
                               "one class index")
    bad = np.flatnonzero((labels < UNKNOWN_LABEL) | (labels >= k))
    if bad.size:
        raise _malformed(path, f"dataset /labels row {bad[0]} holds {labels[bad[0]]}; labels are class indices "
                               f"0..{k - 1} of its {k} classes, or {UNKNOWN_LABEL} for an unknown class")


def _check_finite(block: np.ndarray, rows: np.ndarray, path: Path) -> None:
    """InputError naming the first of cache `rows` (the rows of `block`, [n, ...]) that holds NaN or inf."""
    finite = np.isfinite(block.reshape(len(rows), -1))
    if finite.all():
        return
    row = rows[np.flatnonzero(~finite.all(1))[0]]
    raise _malformed(path, f"dataset /embeddings row {row} holds a value that is not finite "
                           "(NaN or infinity)")


class FeatureCache:
    """Read access to a cache through `untrusted_hdf5`, opened lazily once per process (`stamp`: the file
    that passed, for DataLoader workers); layout and labels checked on opening, each read of embeddings
    finite; `need_rows` refuses a cache of no videos. Any error of a read is one InputError."""

    def __init__(self, path: str | Path, *, need_rows: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"feature cache {self.path} does not exist")
        if not self.path.is_file():
            raise InputError(f"feature cache {self.path} is not a file")
        with hdf5_errors(self.path, WHAT), open_hdf5(self.path, DATASET_RULES, WHAT) as h5:
            self.stamp = file_stamp(h5)
            self.meta = CacheMeta.from_attrs(dict(h5.attrs), self.path)
            _check_layout(h5, self.meta, self.path, need_rows)
            self.video_ids: list[str] = list(h5["video_ids"].asstr()[()])
            self.labels: np.ndarray = h5["labels"][()]  # int64 [N] or uint8 [N, K]
        _check_labels(self.labels, self.meta, self.path)
        self._h5: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.video_ids)

    def check_classes(self, count: int, source: str) -> None:
        """InputError unless the `count` classes a stage uses (named by `source`, e.g. `--classes FILE`)
        cover the classes the cache's labels index; the message names the first row beyond them."""
        labels, total = self.labels, self.meta.num_classes
        if count >= total:
            return
        bad = np.flatnonzero(labels[:, count:].any(1) if labels.ndim == 2 else labels >= count)
        where = (f"dataset /labels row {bad[0]} holds class "
                 f"{int(np.flatnonzero(labels[bad[0], count:])[0]) + count if labels.ndim == 2 else labels[bad[0]]}"
                 if bad.size else f"dataset /labels indexes {total} classes")
        raise InputError(f"{source} has {count} names but {self.path} holds labels of {total} classes "
                         f"({where}): give the class file the cache was extracted with")

    def _file(self) -> h5py.File:
        """The open file of this process (reopened after a fork or in a spawned worker)."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_hdf5(self.path, DATASET_RULES, WHAT, self.stamp)
            self._pid = os.getpid()
        return self._h5

    def embeddings(self, rows: int | slice | Sequence[int]) -> np.ndarray:
        """float16 [V, T, D] for one row, [n, V, T, D] for a slice or increasing row list (checked finite)."""
        with hdf5_errors(self.path, WHAT):
            block = self._dataset()[rows]
        if isinstance(rows, slice):
            numbers = np.arange(*rows.indices(len(self)))
        else:
            numbers = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        _check_finite(block, numbers, self.path)
        return block

    def read_into(self, out: np.ndarray, first: int, stop: int, at: int = 0) -> None:
        """Rows first..stop-1, read straight into out[at : at + stop - first] (no copy), checked finite."""
        with hdf5_errors(self.path, WHAT):
            self._dataset().read_direct(out, np.s_[first:stop], np.s_[at : at + stop - first])
        _check_finite(out[at : at + stop - first], np.arange(first, stop), self.path)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """float16 [n, V, T, D] of the increasing, unique `rows`, each run of consecutive rows one slice read.

        Far faster than h5py's point selection of a row list (0.8 s for 1,000 rows of 8 x 512; 0.1 s
        here); reading the rows between them instead costs a chunk each (one video per chunk)."""
        data = self._dataset()
        out = np.empty((len(rows), *data.shape[1:]), dtype=np.float16)
        rows = np.asarray(rows, dtype=np.int64)
        bounds = [0, *(np.flatnonzero(np.diff(rows) != 1) + 1).tolist(), len(rows)]
        for first, last in zip(bounds[:-1], bounds[1:]):
            if last > first:
                out[first:last] = self.embeddings(slice(int(rows[first]), int(rows[last - 1]) + 1))
        return out

    def num_frames(self) -> np.ndarray:
        """int64 [N]: the frames of each source video, as the decoder counted them."""
        with hdf5_errors(self.path, WHAT):
            return self._file()["num_frames"][()]

    def _dataset(self) -> h5py.Dataset:
        """The /embeddings dataset itself (float16 [N, V, T, D]); reads go through the checked methods."""
        return self._file()["embeddings"]

    def __getstate__(self) -> dict:  # picklable for spawned workers: the handle is reopened there
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        """Close this process's handle (it reopens on the next read)."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Batch:
    """Rows of finished videos and the failures of one batch, as handed to `PartWriter.write`."""

    list_index: np.ndarray  # int64 [n]  position of each video in the list
    video_ids: list[str]  # [n]
    embeddings: np.ndarray  # float16 [n, V, T, D]
    labels: np.ndarray  # int64 [n] or uint8 [n, K]
    num_frames: np.ndarray  # int64 [n]
    decoders: list[str]  # [n]
    failures: list[Failure] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    """A video that could not be turned into features, and why."""

    list_index: int
    video_id: str
    path: str
    reason: str


def parts_dir_for(cache_path: Path) -> Path:
    """The parts folder of the cache at `cache_path`: `CACHE.h5.parts/` beside it."""
    return cache_path.with_name(cache_path.name + ".parts")


class PartWriter:
    """Writes each finished batch of one process as its own part file, atomically."""

    def __init__(self, parts_dir: Path, rank: int) -> None:
        self.parts_dir = parts_dir
        self.rank = rank
        existing = sorted(parts_dir.glob(f"rank{rank:03d}-*.h5"))
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)

    def write(self, rows: Batch) -> Path:
        """Write `rows` as the next part file of this rank (built in memory, renamed into place)."""
        final = self.parts_dir / f"rank{self.rank:03d}-{self._next:07d}.h5"
        ensure_free_space(final, rows.embeddings.nbytes + 64 * len(rows.video_ids) + (64 << 10))
        image = io.BytesIO()  # built in memory: HDF5 itself handles a failing write badly
        with h5py.File(image, "w") as h5:  # the five row datasets of the cache layout, and the batch's own
            emb = rows.embeddings
            h5.create_dataset("embeddings", data=emb, chunks=(1, *emb.shape[1:]) if len(rows.video_ids) else None)
            h5.create_dataset("video_ids", data=np.array(rows.video_ids, dtype=object), dtype=STR_DTYPE)
            h5.create_dataset("labels", data=rows.labels)
            h5.create_dataset("num_frames", data=rows.num_frames.astype(np.int64))
            h5.create_dataset("decoders", data=np.array(rows.decoders, dtype=object), dtype=STR_DTYPE)
            h5.create_dataset("list_index", data=rows.list_index.astype(np.int64))
            fail = rows.failures
            h5.create_dataset("failure_index", data=np.array([f.list_index for f in fail], dtype=np.int64))
            for name in FAILURE_COLUMNS:
                values = np.array([getattr(f, name) for f in fail], dtype=object)
                h5.create_dataset(f"failure_{name}", data=values, dtype=STR_DTYPE, shape=(len(fail),))
        write_bytes(final, image.getbuffer())
        self._next += 1
        return final


def write_meta_file(parts_dir: Path, meta: CacheMeta) -> None:
    """Record the run's settings in the parts folder (atomically), for resume checks."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_text(parts_dir / "meta.json", json.dumps(asdict(meta), indent=2))


def read_meta_file(parts_dir: Path) -> CacheMeta | None:
    """The settings of an interrupted run, or None; InputError for a corrupt file."""
    path = parts_dir / "meta.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in ("class_names", "mean", "std"):
            data[key] = tuple(data[key])
        return CacheMeta(**data)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise InputError(f"{path} is corrupt ({type(err).__name__}: {err}); remove the folder {parts_dir} "
                         "(its unfinished work is redone) or pass --overwrite") from None


@dataclass
class PartsIndex:
    """What the part files of an interrupted run hold."""

    files: list[Path]
    done_ids: set[str]
    failures: dict[str, Failure]  # latest failure per video id


def open_part(path: Path) -> h5py.File:
    """A part file, open for reading once checked like any file bike did not just write (`untrusted_hdf5`)."""
    return open_hdf5(path, PART_RULES, PART)


def scan_parts(parts_dir: Path) -> PartsIndex:
    """Read the ids in every complete part file; unreadable or refused parts are removed (their work redone)."""
    files, done, failures = [], set(), {}
    for path in sorted(parts_dir.glob("*.h5")) if parts_dir.is_dir() else []:
        try:
            with hdf5_errors(path, PART), open_part(path) as h5:
                ids = [s.decode() if isinstance(s, bytes) else s for s in h5["video_ids"][()]]
                cols = [h5[f"failure_{n}"].asstr()[()] for n in FAILURE_COLUMNS]
                fails = [Failure(int(i), *row) for i, *row in zip(h5["failure_index"][()], *cols)]
        except InputError as err:
            log.warning("part file %s is unreadable (%s); its videos will be redone", path, err)
            path.unlink(missing_ok=True)
            continue
        files.append(path)
        done.update(ids)
        failures.update({f.video_id: f for f in fails})
    return PartsIndex(files, done, failures)


def remove_stale_tmp(parts_dir: Path) -> None:
    """Remove the temporary files of writers that died: `.NAME...tmp`, and the fixed `NAME.tmp` of bike
    before the unique suffix (call only while holding the cache's WriterLock)."""
    for tmp in [*parts_dir.glob(f".*{TMP_SUFFIX}"), *parts_dir.glob(f"*{TMP_SUFFIX}")]:
        tmp.unlink(missing_ok=True)


def finish(parts_dir: Path) -> None:
    """Remove the parts folder once its rows are merged."""
    shutil.rmtree(parts_dir, ignore_errors=True)


def merge(cache_path: Path, parts: PartsIndex, meta: CacheMeta) -> int:
    """Fold the part files (and an existing cache, its rows first) into `cache_path` atomically, new rows in
    list order; returns its videos. Part rows whose id is already there (a kill after a rename) are dropped."""
    existing = FeatureCache(cache_path) if cache_path.exists() else None  # opened (and checked) once
    seen = set(existing.video_ids if existing else ())
    new_rows: list[tuple[int, int, int]] = []  # (list_index, part file, row in part): sorted, list order
    for file_no, path in enumerate(parts.files):
        with hdf5_errors(path, PART), open_part(path) as h5:
            for row, (index, vid) in enumerate(zip(h5["list_index"][()], h5["video_ids"].asstr()[()])):
                if vid not in seen:
                    seen.add(vid)
                    new_rows.append((int(index), file_no, row))
    new_rows.sort()
    total = (len(existing) if existing else 0) + len(new_rows)
    ensure_free_space(cache_path, total * meta.num_views * meta.frames * meta.embed_dim * 2 + total * 256)
    shape = (meta.num_views, meta.frames, meta.embed_dim)
    with atomic_path(cache_path) as tmp, h5py.File(tmp, "w") as out:
        out.create_dataset("embeddings", shape=(total, *shape), maxshape=(None, *shape), dtype=np.float16,
                           chunks=(1, *shape))
        out.create_dataset("labels", shape=(total, *((meta.num_classes,) if meta.multilabel else ())),
                           dtype=np.uint8 if meta.multilabel else np.int64)
        for name, dtype in (("video_ids", STR_DTYPE), ("num_frames", np.int64), ("decoders", STR_DTYPE)):
            out.create_dataset(name, shape=(total,), dtype=dtype)
        out.attrs.update(meta.to_attrs())
        dest = {name: out[name] for name in _ROWS}
        offset = _copy_existing(existing, dest) if existing else 0
        # position of each new row in the output, grouped per part file (increasing within a part)
        per_file: dict[int, list[tuple[int, int]]] = {}
        for position, (_, file_no, row) in enumerate(new_rows, start=offset):
            per_file.setdefault(file_no, []).append((row, position))
        for file_no, pairs in per_file.items():
            with hdf5_errors(parts.files[file_no], PART), open_part(parts.files[file_no]) as part:
                rows = np.array([r for r, _ in pairs])
                src = {k: (part[k].asstr() if k in _TEXT else part[k])[()][rows] for k in _ROWS}
            for i, (_, d) in enumerate(pairs):  # rows of one part land in increasing positions
                for k in _ROWS:
                    dest[k][d] = src[k][i]
    return total


def _copy_existing(cache: FeatureCache, dest: dict[str, h5py.Dataset], block: int = 256) -> int:
    """Copy the rows of `cache` to the start of the `dest` datasets, then close it; return how many. The
    embeddings go through the checked reader: a row that is not finite is refused, not carried over."""
    n = len(cache)
    with cache, hdf5_errors(cache.path, WHAT):
        src = cache._file()
        for start in range(0, n, block):
            stop = min(n, start + block)
            dest["embeddings"][start:stop] = cache.embeddings(slice(start, stop))
            for k in _ROWS[1:]:
                dest[k][start:stop] = (src[k].asstr() if k in _TEXT else src[k])[start:stop]
    return n


def write_failures_csv(path: Path, failures: Iterable[Failure]) -> Path:
    """Write the failures (sorted by list position) atomically to `path`."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FAILURE_COLUMNS)
        for f in sorted(failures, key=lambda f: f.list_index):
            writer.writerow([f.video_id, f.path, f.reason])
    return path
