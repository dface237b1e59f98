"""The HDF5 frame-feature cache that `bike extract-features` writes and later stages read.

Layout (schema version 1; documented for users in docs/formats.md):

    /embeddings   float16 [N, V, T, D]  frame embeddings, NOT L2-normalised; V = C*S views
                                        (view v = clip c * S + crop s), chunks (1, V, T, D)
    /video_ids    utf-8 str [N]         the list's video ids, unique
    /labels       int64 [N]             class index, -1 where unknown          (single-label lists)
                  uint8 [N, K]          multi-hot over K classes                (multi-label lists)
    /num_frames   int64 [N]             frames in the source video, as the decoder counted them
    /decoders     utf-8 str [N]         backend that decoded the video ('decord' or 'pyav')
    attributes    the `CacheMeta` fields (lists stored as JSON strings)

Crash safety: HDF5 is not crash-safe, so the final file is only ever written under a temporary name
and renamed into place. While a run is in progress, finished batches live in a folder
`CACHE.h5.parts/` beside it: each batch is one small HDF5 file with the same datasets plus
`/list_index` and the failures of that batch, written under a temporary name and renamed when
complete. A kill therefore loses at most the batch in flight; the next run reads the parts to know
what is done, and the final merge orders rows as in the video list.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np

from bike_cli.errors import CacheMismatchError, InputError
from bike_cli.io.atomic import atomic_path, ensure_free_space, remove_stale_temps, write_bytes, write_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KIND = "bike-feature-cache"
_STR = h5py.string_dtype("utf-8")
_ADDED_LATER = ("resize_mode", "interpolation")  # attributes older caches lack: their defaults apply


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
    visual_sha256: str | None = None  # digest of the image tower's weights (models.visual_digest)

    COMPAT_FIELDS = (
        "model_name", "pretrained", "checkpoint_sha256", "quick_gelu", "image_size", "embed_dim",
        "frames", "clips", "crops", "sampling_mode", "seed", "decoder", "multilabel",
        "num_classes", "class_names", "resize_mode", "schema_version", "compat",
    )
    OPTIONAL_FIELDS = {"compat": "bike", "visual_sha256": None}  # added later: older caches lack them

    @property
    def num_views(self) -> int:
        return self.clips * self.crops

    def to_attrs(self) -> dict:
        attrs = {"kind": KIND}
        for key, value in asdict(self).items():
            if isinstance(value, (tuple, list)):
                value = json.dumps(list(value))
            attrs[key] = "" if value is None else value  # HDF5 has no null: None is stored as ""
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict, source: Path) -> CacheMeta:
        if attrs.get("kind") != KIND:
            raise InputError(f"{source} is not a bike feature cache (no kind={KIND!r} attribute)")
        version = int(attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise InputError(f"{source} has cache schema version {version}; this bike reads {SCHEMA_VERSION}")
        values = {}
        for f in fields(cls):
            if f.name in cls.OPTIONAL_FIELDS and f.name not in attrs:
                values[f.name] = cls.OPTIONAL_FIELDS[f.name]
                continue
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
    return cache_path.with_name(cache_path.name + ".parts")


def _write_rows(h5: h5py.File, rows: Batch) -> None:
    n = len(rows.video_ids)
    emb = rows.embeddings
    h5.create_dataset("embeddings", data=emb, chunks=(1, *emb.shape[1:]) if n else None)
    h5.create_dataset("video_ids", data=np.array(rows.video_ids, dtype=object), dtype=_STR)
    h5.create_dataset("labels", data=rows.labels)
    h5.create_dataset("num_frames", data=rows.num_frames.astype(np.int64))
    h5.create_dataset("decoders", data=np.array(rows.decoders, dtype=object), dtype=_STR)


class PartWriter:
    """Writes each finished batch of one process as its own part file, atomically."""

    def __init__(self, parts_dir: Path, rank: int) -> None:
        self.parts_dir = parts_dir
        self.rank = rank
        existing = sorted(parts_dir.glob(f"rank{rank:03d}-*.h5"))
        self._next = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)

    def write(self, rows: Batch) -> Path:
        final = self.parts_dir / f"rank{self.rank:03d}-{self._next:07d}.h5"
        ensure_free_space(final, rows.embeddings.nbytes + 64 * len(rows.video_ids) + (64 << 10))
        image = io.BytesIO()  # built in memory: HDF5 itself handles a failing write badly
        with h5py.File(image, "w") as h5:
            _write_rows(h5, rows)
            h5.create_dataset("list_index", data=rows.list_index.astype(np.int64))
            fail = rows.failures
            h5.create_dataset("failure_index", data=np.array([f.list_index for f in fail], dtype=np.int64))
            for name in ("video_id", "path", "reason"):
                values = np.array([getattr(f, name) for f in fail], dtype=object)
                h5.create_dataset(f"failure_{name}", data=values, dtype=_STR, shape=(len(fail),))
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


def scan_parts(parts_dir: Path) -> PartsIndex:
    """Read the ids in every complete part file; unreadable parts are removed (their work redone)."""
    files, done, failures = [], set(), {}
    for path in sorted(parts_dir.glob("*.h5")) if parts_dir.is_dir() else []:
        try:
            with h5py.File(path, "r") as h5:
                ids = [s.decode() if isinstance(s, bytes) else s for s in h5["video_ids"][()]]
                fails = _read_failures(h5)
        except (OSError, KeyError) as err:
            log.warning("part file %s is unreadable (%s); its videos will be redone", path, err)
            path.unlink(missing_ok=True)
            continue
        files.append(path)
        done.update(ids)
        failures.update({f.video_id: f for f in fails})
    return PartsIndex(files, done, failures)


def _read_failures(h5: h5py.File) -> list[Failure]:
    cols = [h5[f"failure_{n}"].asstr()[()] for n in ("video_id", "path", "reason")]
    return [Failure(int(i), *row) for i, *row in zip(h5["failure_index"][()], *cols)]


def remove_stale_tmp(parts_dir: Path) -> None:
    """Temporary files of writers that died (call only while holding the cache's WriterLock)."""
    if parts_dir.is_dir():
        remove_stale_temps(parts_dir)


def merge(cache_path: Path, parts: PartsIndex, meta: CacheMeta) -> int:
    """Fold the part files (and an existing cache) into `cache_path`, atomically.

    Rows of an existing cache come first, in their order; new rows follow in list order. Part rows
    whose id the existing cache already holds (a kill after the last merge's rename) are dropped.
    Returns the number of videos in the merged cache.
    """
    existing_ids: list[str] = []
    if cache_path.exists():
        with h5py.File(cache_path, "r") as h5:
            existing_ids = list(h5["video_ids"].asstr()[()])
    seen = set(existing_ids)
    # (list_index, part file, row in part) for every new row, in list order
    new_rows: list[tuple[int, int, int]] = []
    for file_no, path in enumerate(parts.files):
        with h5py.File(path, "r") as h5:
            ids = h5["video_ids"].asstr()[()]
            for row, (index, vid) in enumerate(zip(h5["list_index"][()], ids)):
                if vid not in seen:
                    seen.add(vid)
                    new_rows.append((int(index), file_no, row))
    new_rows.sort()
    total = len(existing_ids) + len(new_rows)
    ensure_free_space(cache_path, total * meta.num_views * meta.frames * meta.embed_dim * 2 + total * 256)
    with atomic_path(cache_path) as tmp, h5py.File(tmp, "w") as out:
        shape = (meta.num_views, meta.frames, meta.embed_dim)
        emb = out.create_dataset("embeddings", shape=(total, *shape), maxshape=(None, *shape),
                                 dtype=np.float16, chunks=(1, *shape))
        label_shape = (meta.num_classes,) if meta.multilabel else ()
        labels = out.create_dataset("labels", shape=(total, *label_shape),
                                    dtype=np.uint8 if meta.multilabel else np.int64)
        ids = out.create_dataset("video_ids", shape=(total,), dtype=_STR)
        nframes = out.create_dataset("num_frames", shape=(total,), dtype=np.int64)
        decoders = out.create_dataset("decoders", shape=(total,), dtype=_STR)
        out.attrs.update(meta.to_attrs())
        offset = 0
        if existing_ids:
            offset = _copy_existing(cache_path, emb, labels, ids, nframes, decoders)
        # position of each new row in the output, grouped per part file (increasing within a part)
        per_file: dict[int, list[tuple[int, int]]] = {}
        for position, (_, file_no, row) in enumerate(new_rows, start=offset):
            per_file.setdefault(file_no, []).append((row, position))
        for file_no, pairs in per_file.items():
            with h5py.File(parts.files[file_no], "r") as part:
                rows = np.array([r for r, _ in pairs])
                dest = np.array([p for _, p in pairs])
                src = {k: part[k][()][rows] for k in ("embeddings", "labels", "num_frames")}
                src_ids = part["video_ids"].asstr()[()][rows]
                src_dec = part["decoders"].asstr()[()][rows]
            for i, d in enumerate(dest):  # rows of one part land in increasing positions
                emb[d] = src["embeddings"][i]
                labels[d] = src["labels"][i]
                ids[d] = src_ids[i]
                nframes[d] = src["num_frames"][i]
                decoders[d] = src_dec[i]
    return total


def _copy_existing(path: Path, emb, labels, ids, nframes, decoders, block: int = 256) -> int:
    with h5py.File(path, "r") as src:
        n = len(src["video_ids"])
        for start in range(0, n, block):
            stop = min(n, start + block)
            emb[start:stop] = src["embeddings"][start:stop]
            labels[start:stop] = src["labels"][start:stop]
            ids[start:stop] = src["video_ids"].asstr()[start:stop]
            nframes[start:stop] = src["num_frames"][start:stop]
            decoders[start:stop] = src["decoders"].asstr()[start:stop]
    return n


def finish(parts_dir: Path) -> None:
    """Remove the parts folder once its rows are merged."""
    shutil.rmtree(parts_dir, ignore_errors=True)


_DATASETS = ("embeddings", "video_ids", "labels", "num_frames", "decoders")


def validate_layout(h5: h5py.File, meta: CacheMeta, path: Path) -> None:
    """InputError unless every dataset is there, with N rows and the shapes `meta` describes."""
    missing = [name for name in _DATASETS if name not in h5]
    if missing:
        raise InputError(f"{path} is a malformed feature cache: dataset(s) {', '.join(missing)} missing")
    rows = {name: h5[name].shape[0] if h5[name].shape else 0 for name in _DATASETS}
    if len(set(rows.values())) != 1:
        raise InputError(f"{path} is a malformed feature cache: datasets of different lengths {rows}")
    expected = (meta.num_views, meta.frames, meta.embed_dim)
    if h5["embeddings"].shape[1:] != expected:
        raise InputError(f"{path} is a malformed feature cache: embeddings of shape {h5['embeddings'].shape[1:]} "
                         f"per video, its attributes say (views, frames, dim) = {expected}")
    label_shape = (meta.num_classes,) if meta.multilabel else ()
    if h5["labels"].shape[1:] != label_shape:
        raise InputError(f"{path} is a malformed feature cache: labels of shape {h5['labels'].shape[1:]} per "
                         f"video, expected {label_shape}")


class FeatureCache:
    """Read access to a cache. Opens the file lazily, once per process (safe with DataLoader workers)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"feature cache {self.path} does not exist")
        if not self.path.is_file():
            raise InputError(f"feature cache {self.path} is not a file")
        try:
            with h5py.File(self.path, "r") as h5:
                self.meta = CacheMeta.from_attrs(dict(h5.attrs), self.path)
                validate_layout(h5, self.meta, self.path)
                self.video_ids: list[str] = list(h5["video_ids"].asstr()[()])
                self.labels: np.ndarray = h5["labels"][()]  # int64 [N] or uint8 [N, K]
        except OSError as err:
            raise InputError(f"{self.path} is not a readable HDF5 file: {err}") from None
        except (KeyError, ValueError, TypeError) as err:  # attributes missing or of the wrong type
            raise InputError(f"{self.path} is a malformed feature cache ({type(err).__name__}: {err})") from None
        self._h5: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.video_ids)

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def embeddings(self, rows: int | slice | Sequence[int]) -> np.ndarray:
        """float16 [V, T, D] for one row, [n, V, T, D] for a slice or increasing row list."""
        return self._file()["embeddings"][rows]

    def dataset(self) -> h5py.Dataset:
        """The /embeddings dataset itself (float16 [N, V, T, D]), for reads straight into an array."""
        return self._file()["embeddings"]

    def __getstate__(self) -> dict:  # picklable for spawned workers: the handle is reopened there
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

