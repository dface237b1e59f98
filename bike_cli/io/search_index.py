"""The search index of `bike search`, kept beside a feature cache: `CACHE.h5.search-index.h5`.

Layout (schema version 1; documented in docs/formats.md):

    /vectors   float16 [N, D]   per video, the mean over views of the unit mean-pooled view
                                vectors (`bike_cli.models.search.video_vectors`), in cache row order
    attributes kind ("bike-search-index"), schema_version, and the identity of the cache it was
               built from: cache_size (bytes), cache_mtime_ns, cache_meta_sha256 (of the cache's
               attributes), rows

An index whose recorded identity differs from the cache's now (the cache was rewritten, extended or
replaced) is stale: `read_search_index` returns None and the stage rebuilds it. Written under a
temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from bike_cli.io.atomic import atomic_path, ensure_free_space
from bike_cli.io.feature_cache import CacheMeta

log = logging.getLogger(__name__)

KIND = "bike-search-index"
SCHEMA_VERSION = 1
SUFFIX = ".search-index.h5"
IDENTITY = ("cache_size", "cache_mtime_ns", "cache_meta_sha256", "rows")


def index_path(cache_path: str | Path) -> Path:
    """Where the index of the cache at `cache_path` lives: beside it, `CACHE.h5.search-index.h5`."""
    path = Path(cache_path)
    return path.with_name(path.name + SUFFIX)


def cache_identity(cache_path: str | Path, meta: CacheMeta, rows: int) -> dict:
    """What invalidates an index: the cache file's size and mtime, a digest of its meta, its row count."""
    st = os.stat(cache_path)
    digest = hashlib.sha256(json.dumps(meta.to_attrs(), sort_keys=True, default=str).encode()).hexdigest()
    return {"cache_size": int(st.st_size), "cache_mtime_ns": int(st.st_mtime_ns), "cache_meta_sha256": digest,
            "rows": int(rows)}


def read_search_index(path: str | Path, identity: dict) -> np.ndarray | None:
    """float16 [N, D] of the index at `path`, or None when it is absent, unreadable or stale."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
            if attrs.get("kind") != KIND or int(attrs.get("schema_version", -1)) != SCHEMA_VERSION:
                log.warning("%s is not a search index of schema %d: rebuilding it", path, SCHEMA_VERSION)
                return None
            recorded = {key: attrs.get(key) for key in IDENTITY}
            recorded = {k: v.decode() if isinstance(v, bytes) else v for k, v in recorded.items()}
            if any(str(recorded[k]) != str(identity[k]) for k in IDENTITY):
                log.info("%s is stale (the cache changed since it was built): rebuilding it", path)
                return None
            return h5["vectors"][()]
    except (OSError, KeyError, ValueError) as err:
        log.warning("%s is not a readable search index (%s): rebuilding it", path, err)
        return None


def write_search_index(path: str | Path, vectors: np.ndarray, identity: dict) -> Path:
    """Write float16 [N, D] `vectors` with the cache's `identity` atomically; returns `path`."""
    path = Path(path)
    vectors = np.ascontiguousarray(vectors, dtype=np.float16)
    ensure_free_space(path, vectors.nbytes + (64 << 10))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("vectors", data=vectors)
        h5.attrs.update({"kind": KIND, "schema_version": SCHEMA_VERSION,
                         **{k: (str(v) if k == "cache_meta_sha256" else int(v)) for k, v in identity.items()}})
    return path
