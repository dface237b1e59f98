"""The parts folder of an extraction in progress (`CACHE.h5.parts/`, laid out in `feature_cache`).

Each finished batch becomes one part file (`PartWriter`), the run's settings are kept in
`meta.json` for resume checks, `scan_parts` reads what the parts hold, and `finish` removes the
folder once `feature_cache_merge.merge` has folded the parts into the cache.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from bike_cli.errors import InputError
from bike_cli.io.atomic import ensure_free_space, remove_stale_temps, write_bytes, write_text
from bike_cli.io.feature_cache import STR_DTYPE, CacheMeta
from bike_cli.io.feature_cache_checks import DATASET_RULES
from bike_cli.io.hdf5_probe import STRING
from bike_cli.io.untrusted_hdf5 import Rules, hdf5_errors, open_hdf5

log = logging.getLogger(__name__)

WHAT = "part file"
PART_RULES: Rules = {**DATASET_RULES, "list_index": ("iu", (1,)), "failure_index": ("iu", (1,)),
                     **{f"failure_{name}": (STRING, (1,)) for name in ("video_id", "path", "reason")}}


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


def _write_rows(h5: h5py.File, rows: Batch) -> None:
    """The five row datasets of the cache layout, filled with `rows`."""
    n = len(rows.video_ids)
    emb = rows.embeddings
    h5.create_dataset("embeddings", data=emb, chunks=(1, *emb.shape[1:]) if n else None)
    h5.create_dataset("video_ids", data=np.array(rows.video_ids, dtype=object), dtype=STR_DTYPE)
    h5.create_dataset("labels", data=rows.labels)
    h5.create_dataset("num_frames", data=rows.num_frames.astype(np.int64))
    h5.create_dataset("decoders", data=np.array(rows.decoders, dtype=object), dtype=STR_DTYPE)


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
        with h5py.File(image, "w") as h5:
            _write_rows(h5, rows)
            h5.create_dataset("list_index", data=rows.list_index.astype(np.int64))
            fail = rows.failures
            h5.create_dataset("failure_index", data=np.array([f.list_index for f in fail], dtype=np.int64))
            for name in ("video_id", "path", "reason"):
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
    return open_hdf5(path, PART_RULES, WHAT)


def scan_parts(parts_dir: Path) -> PartsIndex:
    """Read the ids in every complete part file; unreadable or refused parts are removed (their work redone)."""
    files, done, failures = [], set(), {}
    for path in sorted(parts_dir.glob("*.h5")) if parts_dir.is_dir() else []:
        try:
            with hdf5_errors(path, WHAT), open_part(path) as h5:
                ids = [s.decode() if isinstance(s, bytes) else s for s in h5["video_ids"][()]]
                fails = _read_failures(h5)
        except InputError as err:
            log.warning("part file %s is unreadable (%s); its videos will be redone", path, err)
            path.unlink(missing_ok=True)
            continue
        files.append(path)
        done.update(ids)
        failures.update({f.video_id: f for f in fails})
    return PartsIndex(files, done, failures)


def _read_failures(h5: h5py.File) -> list[Failure]:
    """The failures recorded in one part file."""
    cols = [h5[f"failure_{n}"].asstr()[()] for n in ("video_id", "path", "reason")]
    return [Failure(int(i), *row) for i, *row in zip(h5["failure_index"][()], *cols)]


def remove_stale_tmp(parts_dir: Path) -> None:
    """Temporary files of writers that died (call only while holding the cache's WriterLock)."""
    if parts_dir.is_dir():
        remove_stale_temps(parts_dir)


def finish(parts_dir: Path) -> None:
    """Remove the parts folder once its rows are merged."""
    shutil.rmtree(parts_dir, ignore_errors=True)
