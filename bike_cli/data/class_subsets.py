"""Class subsets: the base and novel classes of the base-to-novel protocol (ViFi-CLIP, FROSTER, TC-CLIP),
the K600 splits, and the one rule for finding a subset's classes among the classes labels are numbered by.

A subset is a class file (`read_class_names`: ViFi-CLIP's `labels/hmdb_51_base_labels.csv` is an `id,name`
CSV) whose names are matched to the classes in use in their `bike_cli.data.lexicons.normalise_name` form
(lower case, `_` as a space), so `brush_hair` finds `brush hair`. Whether a training list's labels index the
full class file or the base class file itself is never guessed from the numbers: labels are numbered by the
class names that describe them (a cache's recorded names, `--classes`, else the base file) and the subset
is picked from those by name (`restrict_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from bike_cli.data.class_names import read_class_names
from bike_cli.data.lexicons import normalise_name
from bike_cli.data.video_lists import VideoEntry
from bike_cli.errors import InputError


def match_class_names(wanted: Sequence[str], class_names: Sequence[str], what: str, where: str) -> np.ndarray:
    """Indices in `class_names` of the `wanted` names (compared as `normalise_name` forms); an InputError
    naming `what`, `where` and the missing names when some are not there, or one matching several."""
    index: dict[str, list[int]] = {}
    for i, name in enumerate(class_names):
        index.setdefault(normalise_name(name), []).append(i)
    keys = [normalise_name(name) for name in wanted]
    missing = [name for name, key in zip(wanted, keys) if key not in index]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputError(f"{what}: {len(missing)} of its {len(wanted)} classes are not among the "
                         f"{len(class_names)} classes of {where}: {shown}")
    ambiguous = [name for name, key in zip(wanted, keys) if len(index[key]) > 1]
    if ambiguous:
        raise InputError(f"{what}: class {ambiguous[0]!r} matches several columns of {where}")
    return np.array([index[key][0] for key in keys], dtype=np.int64)


def check_disjoint(base: Sequence[str], novel: Sequence[str], base_source: object, novel_source: object) -> None:
    """InputError naming the shared classes when the base and the novel classes overlap."""
    novel_keys = {normalise_name(name) for name in novel}
    shared = [name for name in base if normalise_name(name) in novel_keys]
    if shared:
        shown = ", ".join(repr(s) for s in shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise InputError(f"--base-classes {base_source} and --novel-classes {novel_source} share "
                         f"{len(shared)} classes ({shown}): base and novel classes must be disjoint")


def restrict_labels(labels: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Labels numbered by K classes renumbered by the subset at `positions` [k] (indices among the K):
    integer labels [N] of classes outside the subset become -1 (unknown), multi-hot rows [N, K] keep the
    subset's columns [N, k]."""
    labels = np.asarray(labels)
    positions = np.asarray(positions, dtype=np.int64)
    if labels.ndim == 2:
        return labels[:, positions]
    num_classes = int(max(labels.max(initial=-1), positions.max(initial=-1))) + 1
    remap = np.full(num_classes, -1, dtype=np.int64)
    remap[positions] = np.arange(len(positions))
    return np.where(labels >= 0, remap[np.clip(labels, 0, None)], -1).astype(labels.dtype if labels.dtype.kind == "i" else np.int64)


def labelled_rows(labels: np.ndarray) -> np.ndarray:
    """Rows [n] with a known class: an integer label >= 0 ([N]) or a multi-hot row with a class ([N, K])."""
    labels = np.asarray(labels)
    return np.flatnonzero(labels.any(1) if labels.ndim == 2 else labels >= 0)


def subset_rows(labels: np.ndarray, positions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A cache's labels (numbered by the classes in use) as training and validation read them with
    `--base-classes`: renumbered by the subset at `positions` (`restrict_labels`; unchanged when None),
    and the rows [n] that keep a class (`labelled_rows`), so the videos of other classes are left out."""
    if positions is not None:
        labels = restrict_labels(labels, positions)
    return labels, labelled_rows(labels)


def class_subset(path: str | Path | None, class_names: Sequence[str], where: object) -> np.ndarray | None:
    """Positions [k] among `class_names` (the classes labels are numbered by, named by `where`) of the
    classes of the class file `path` (`--base-classes`), in the file's order; None without a file."""
    if path is None:
        return None
    return match_class_names(read_class_names(path), class_names, f"--base-classes {path}", where)


def subset_entries(entries: Sequence[tuple[int, VideoEntry]], positions: np.ndarray) -> list[tuple[int, VideoEntry]]:
    """(list index, entry) pairs whose labels (numbered by K classes) are renumbered by the subset at
    `positions`; labels outside the subset are dropped, so a video of no subset class has none left."""
    remap = {int(p): i for i, p in enumerate(positions)}
    return [(i, replace(e, labels=tuple(remap[label] for label in e.labels if label in remap)))
            for i, e in entries]
