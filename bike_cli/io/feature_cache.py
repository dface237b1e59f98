"""The HDF5 frame-feature cache that `bike extract-features` writes and later stages read: its
layout (below, the one place it is described), `CacheMeta` and the reader `FeatureCache`.
`feature_cache_parts` writes and scans the part files of a run, `feature_cache_merge` folds them
into the cache.

Layout (schema version 1; documented for users in docs/formats.md):

    /embeddings   float16 [N, V, T, D]  frame embeddings, NOT L2-normalised; V = C*S views
                                        (view v = clip c * S + crop s), chunks (1, V, T, D)
    /video_ids    utf-8 str [N]         the list's video ids, unique
    /labels       int64 [N]             class index, -1 (UNKNOWN_LABEL) where unknown (single-label lists)
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

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from bike_cli.errors import CacheMismatchError, InputError
from bike_cli.io.feature_cache_checks import (
    DATASET_RULES,
    UNKNOWN_LABEL,
    check_classes,
    check_finite,
    check_labels,
    check_layout,
)
from bike_cli.io.untrusted_hdf5 import file_stamp, hdf5_errors, open_hdf5

__all__ = ["UNKNOWN_LABEL", "CacheMeta", "FeatureCache"]

SCHEMA_VERSION = 1
KIND = "bike-feature-cache"
WHAT = "feature cache"  # in messages: "PATH is a malformed feature cache: ..."
STR_DTYPE = h5py.string_dtype("utf-8")  # the strings of every dataset
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
    visual_sha256: str | None = None  # digest of the image tower's weights (models.clip)

    COMPAT_FIELDS = (
        "model_name", "pretrained", "checkpoint_sha256", "quick_gelu", "image_size", "embed_dim",
        "frames", "clips", "crops", "sampling_mode", "seed", "decoder", "multilabel",
        "num_classes", "class_names", "resize_mode", "schema_version", "compat",
    )
    OPTIONAL_FIELDS = {"compat": "bike", "visual_sha256": None}  # added later: older caches lack them

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
        """Read back `to_attrs`; fields older caches lack take their defaults; InputError unless a bike cache of this schema."""
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


class FeatureCache:
    """Read access to a cache. Opens the file lazily, once per process (safe with DataLoader workers).

    The file is opened through `untrusted_hdf5` (checked in a helper process first; `stamp` says which
    file passed, for the workers the reader is pickled to). Opening checks the layout and the labels,
    each read of embeddings that its rows are finite (`feature_cache_checks`); `need_rows` refuses a
    cache of no videos (for the stages that read rows). Any error of a read is one InputError."""

    def __init__(self, path: str | Path, *, need_rows: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"feature cache {self.path} does not exist")
        if not self.path.is_file():
            raise InputError(f"feature cache {self.path} is not a file")
        with hdf5_errors(self.path, WHAT), open_hdf5(self.path, DATASET_RULES, WHAT) as h5:
            self.stamp = file_stamp(h5)
            self.meta = CacheMeta.from_attrs(dict(h5.attrs), self.path)
            check_layout(h5, self.meta, self.path, need_rows)
            self.video_ids: list[str] = list(h5["video_ids"].asstr()[()])
            self.labels: np.ndarray = h5["labels"][()]  # int64 [N] or uint8 [N, K]
        check_labels(self.labels, self.meta, self.path)
        self._h5: h5py.File | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.video_ids)

    def check_classes(self, count: int, source: str) -> None:
        """InputError unless the `count` classes a stage uses (named by `source`, e.g. `--classes FILE`)
        cover the classes the cache's labels index; the message names the first row beyond them."""
        check_classes(self.labels, self.meta, self.path, count, source)

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
        check_finite(block, numbers, self.path)
        return block

    def read_into(self, out: np.ndarray, first: int, stop: int, at: int = 0) -> None:
        """Rows first..stop-1, read straight into out[at : at + stop - first] (no copy), checked finite."""
        with hdf5_errors(self.path, WHAT):
            self._dataset().read_direct(out, np.s_[first:stop], np.s_[at : at + stop - first])
        check_finite(out[at : at + stop - first], np.arange(first, stop), self.path)

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

