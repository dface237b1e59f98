"""The files of `bike search` (docs/formats.md): its index beside a feature cache (schema 2; a cache, not
an authority: used only when built from the cache's content, else rebuilt) and the hits CSV of `--out`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from bike_cli.errors import BikeError, InputError
from bike_cli.io.atomic import atomic_path, ensure_free_space, write_text
from bike_cli.io.csv_meta import write_csv_meta
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.identity import stream_sha256
from bike_cli.io.score_csv import round_significant
from bike_cli.io.untrusted_hdf5 import Stamp, hdf5_errors, open_hdf5

log = logging.getLogger(__name__)

KIND = "bike-search-index"
SCHEMA_VERSION = 2
SUFFIX = ".search-index.h5"
WHAT = "search index"
INDEX_RULES = {"vectors": ("f", (2,))}
STAMP = {"cache_device": "device", "cache_inode": "inode", "cache_size": "size", "cache_mtime_ns": "mtime_ns",
         "cache_ctime_ns": "ctime_ns"}  # attribute -> Stamp field
HITS_COLUMNS = ("query", "rank", "video_id", "path", "score", "salient_step", "salient_frame")
SCORE_RULES = {"vcs": "search-vcs", "mean": "search-mean"}  # --rule -> the hits sidecar's `scores`


def index_path(cache_path: str | Path) -> Path:
    """Where the index of the cache at `cache_path` lives: beside it, `CACHE.h5.search-index.h5`."""
    path = Path(cache_path)
    return path.with_name(path.name + SUFFIX)


class CacheIdentity:
    """What an index must have been built from: the cache's meta, rows and width, its file's stamp
    and, computed once when first asked, the sha256 of its bytes."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache
        attrs = json.dumps(cache.meta.to_attrs(), sort_keys=True, default=str).encode()
        self.meta_sha256 = hashlib.sha256(attrs).hexdigest()
        self._content: str | None = None

    @property
    def key(self) -> tuple:
        """What tells this state of the cache from another, within one process."""
        return self.meta_sha256, len(self.cache), self.cache.stamp

    def content_sha256(self) -> str:
        """sha256 of the cache file's bytes (InputError where the file changed since it was opened)."""
        if self._content is None:
            with open(self.cache.path, "rb") as stream:
                if Stamp.of(os.fstat(stream.fileno())) != self.cache.stamp:
                    raise InputError(f"{self.cache.path} changed while it was read; run again")
                self._content = stream_sha256(stream)
        return self._content


def _unusable(attrs: dict, vectors: h5py.Dataset, identity: CacheIdentity) -> str | None:
    """Why an index cannot serve the cache whatever its content (logged as a warning), else None."""
    if attrs.get("kind") != KIND or str(attrs.get("schema_version")) != str(SCHEMA_VERSION):
        return f"it is not a search index of schema {SCHEMA_VERSION}"
    rows, dim = len(identity.cache), identity.cache.meta.embed_dim
    if vectors.dtype != np.float16 or vectors.shape != (rows, dim):
        return f"its /vectors are {vectors.dtype} {vectors.shape}, not float16 ({rows}, {dim}) for the cache's rows"
    return None


def _finite(vectors: np.ndarray) -> bool:
    """Whether float16 `vectors` hold no NaN or infinity: every exponent below all ones (0.1 s for
    240,000 x 512, where np.isfinite takes 0.3 to 0.6 s)."""
    return vectors.size == 0 or int((vectors.view(np.uint16) & 0x7FFF).max()) < 0x7C00


def _same_content(attrs: dict, identity: CacheIdentity) -> bool:
    """Whether the index was built from the cache as it is now (its stamp, else its bytes' sha256)."""
    if str(attrs.get("cache_meta_sha256")) != identity.meta_sha256 or str(attrs.get("rows")) != str(len(identity.cache)):
        return False
    stamp = identity.cache.stamp
    if all(str(attrs.get(name)) == str(getattr(stamp, field_name)) for name, field_name in STAMP.items()):
        return True
    return str(attrs.get("cache_sha256")) == identity.content_sha256()


def read_search_index(path: str | Path, identity: CacheIdentity) -> np.ndarray | None:
    """float16 [N, D] of the index at `path`, or None when it is absent, malformed or stale (rebuild it)."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    try:
        with hdf5_errors(path, WHAT), open_hdf5(path, INDEX_RULES, WHAT) as h5:
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in h5.attrs.items()}
            vectors = h5["vectors"]
            why = _unusable(attrs, vectors, identity)
            if why is None:
                if not _same_content(attrs, identity):
                    log.info("%s is stale (the cache changed since it was built): rebuilding it", path)
                    return None
                data = vectors[()]
                if not _finite(data):
                    why = f"/vectors row {int(np.flatnonzero(~np.isfinite(data).all(1))[0])} is not finite"
    except InputError as err:
        why = str(err)
    if why is not None:
        log.warning("search index %s cannot be used (%s): rebuilding it", path, why)
        return None
    if any(str(attrs.get(name)) != str(getattr(identity.cache.stamp, f)) for name, f in STAMP.items()):
        try:  # record the cache's new stamp (same content), so that the next process skips the sha256
            write_search_index(path, data, identity)
        except (OSError, BikeError) as err:  # a read-only folder: the next process hashes again
            log.debug("search index %s not re-stamped: %s", path, err)
    return data


def write_search_index(path: str | Path, vectors: np.ndarray, identity: CacheIdentity) -> Path:
    """Write float16 [N, D] `vectors` with what they were built from (`identity`) atomically; returns `path`."""
    path = Path(path)
    vectors = np.ascontiguousarray(vectors, dtype=np.float16)
    attrs = {"kind": KIND, "schema_version": SCHEMA_VERSION, "cache_meta_sha256": identity.meta_sha256,
             "rows": len(identity.cache), "cache_sha256": identity.content_sha256(),
             **{name: int(getattr(identity.cache.stamp, f)) for name, f in STAMP.items()}}
    ensure_free_space(path, vectors.nbytes + (64 << 10))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("vectors", data=vectors)
        h5.attrs.update(attrs)
    return path


@dataclass(frozen=True)
class Hit:
    """One row: a video found for a query."""

    query: str
    rank: int
    video_id: str
    path: str
    score: float
    salient_step: int
    salient_frame: int


def write_hits_csv(path: str | Path, hits: Sequence[Hit], compat: str, rule: str) -> Path:
    """Write `hits` and the sidecar (`scores` = SCORE_RULES[rule], `rule` checked by the stage) atomically."""
    scores = round_significant([h.score for h in hits]) if hits else []
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HITS_COLUMNS)
    for hit, score in zip(hits, scores):
        writer.writerow([hit.query, hit.rank, hit.video_id, hit.path, repr(float(score)),
                         hit.salient_step, hit.salient_frame])
    write_text(path, text.getvalue())
    write_csv_meta(path, compat, SCORE_RULES[rule])
    return Path(path)
