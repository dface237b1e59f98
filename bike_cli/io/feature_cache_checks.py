"""What the feature-cache reader (`feature_cache.FeatureCache`) checks, so that every stage reading a
cache relies on the same rules (documented for users in docs/formats.md):

- before open, in a helper process (`untrusted_hdf5`, rules `DATASET_RULES`): each dataset stored
  in the file itself (no link or storage reaching another file, no virtual dataset, no filter), of
  a dtype kind and rank it can have, every declared byte stored; root attributes single values;
- on open: every dataset there, all of the same length (and, where a stage needs rows, at least one);
  embeddings of float dtype and of the shape the attributes describe; single-label labels integers
  in 0..K-1 or `UNKNOWN_LABEL`; multi-label rows K wide, of 0s and 1s; class names K or none;
- on every read of embeddings: the rows read are finite (checked in the slab just read, never with
  a second pass over the file);
- where a stage knows the classes in use: the cache's labels index no class beyond them.

Each refusal is an InputError naming the file, the dataset and, where one is at fault, the first bad row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import h5py
import numpy as np

from bike_cli.errors import InputError
from bike_cli.io.hdf5_probe import STRING
from bike_cli.io.untrusted_hdf5 import Rules

UNKNOWN_LABEL = -1  # the single-label class index of a video whose class is not known
# what the helper process checks before the file is opened here (`untrusted_hdf5`): kinds and ranks
DATASET_RULES: Rules = {"embeddings": ("f", (4,)), "video_ids": (STRING, (1,)), "labels": ("iubf", (1, 2)),
                        "num_frames": ("iu", (1,)), "decoders": (STRING, (1,))}
DATASETS = tuple(DATASET_RULES)


class CacheMeta(Protocol):
    """What the checks read of a cache's `feature_cache.CacheMeta` (not imported: it imports this module)."""

    num_views: int
    frames: int
    embed_dim: int
    multilabel: bool
    num_classes: int
    class_names: tuple[str, ...]


def _malformed(path: Path, what: str) -> InputError:
    return InputError(f"{path} is a malformed feature cache: {what}")


def check_layout(h5: h5py.File, meta: CacheMeta, path: Path, need_rows: bool) -> None:
    """InputError unless every dataset is there, with N rows (N > 0 if `need_rows`) and the shapes and
    dtypes `meta` describes."""
    missing = [name for name in DATASETS if name not in h5]
    if missing:
        raise _malformed(path, f"dataset(s) {', '.join('/' + m for m in missing)} missing")
    rows = {name: h5[name].shape[0] if h5[name].shape else 0 for name in DATASETS}
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


def check_labels(labels: np.ndarray, meta: CacheMeta, path: Path) -> None:
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


def check_classes(labels: np.ndarray, meta: CacheMeta, path: Path, count: int, source: str) -> None:
    """InputError unless the `count` class names of `source` (the classes a stage uses) cover the cache's."""
    if count >= meta.num_classes:
        return
    beyond = labels[:, count:].any(1) if labels.ndim == 2 else labels >= count
    bad = np.flatnonzero(beyond)
    where = (f"dataset /labels row {bad[0]} holds class "
             f"{int(np.flatnonzero(labels[bad[0], count:])[0]) + count if labels.ndim == 2 else labels[bad[0]]}"
             if bad.size else f"dataset /labels indexes {meta.num_classes} classes")
    raise InputError(f"{source} has {count} names but {path} holds labels of {meta.num_classes} classes "
                     f"({where}): give the class file the cache was extracted with")


def check_finite(block: np.ndarray, rows: np.ndarray, path: Path) -> None:
    """InputError naming the first of cache `rows` (the rows of `block`, [n, ...]) that holds NaN or inf."""
    finite = np.isfinite(block.reshape(len(rows), -1))
    if finite.all():
        return
    row = rows[np.flatnonzero(~finite.all(1))[0]]
    raise _malformed(path, f"dataset /embeddings row {row} holds a value that is not finite "
                           "(NaN or infinity)")
