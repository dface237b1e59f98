"""Fold the part files of a run (and an existing cache) into the final cache file, atomically.

The final file is written under a temporary name and renamed into place (HDF5 is not crash-safe);
its layout is the one `feature_cache` documents.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from bike_cli.io.atomic import atomic_path, ensure_free_space
from bike_cli.io.feature_cache import STR_DTYPE, WHAT, CacheMeta, FeatureCache
from bike_cli.io.feature_cache_checks import DATASET_RULES
from bike_cli.io.feature_cache_parts import WHAT as PART
from bike_cli.io.feature_cache_parts import PartsIndex, open_part
from bike_cli.io.untrusted_hdf5 import hdf5_errors, open_hdf5


def merge(cache_path: Path, parts: PartsIndex, meta: CacheMeta) -> int:
    """Fold the part files (and an existing cache) into `cache_path`, atomically.

    Rows of an existing cache come first, in their order; new rows follow in list order. Part rows
    whose id the existing cache already holds (a kill after the last merge's rename) are dropped.
    Returns the number of videos in the merged cache.
    """
    existing_ids: list[str] = []
    if cache_path.exists():
        with FeatureCache(cache_path) as cache:
            existing_ids = cache.video_ids
    seen = set(existing_ids)
    # (list_index, part file, row in part) for every new row, in list order
    new_rows: list[tuple[int, int, int]] = []
    for file_no, path in enumerate(parts.files):
        with hdf5_errors(path, PART), open_part(path) as h5:
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
        ids = out.create_dataset("video_ids", shape=(total,), dtype=STR_DTYPE)
        nframes = out.create_dataset("num_frames", shape=(total,), dtype=np.int64)
        decoders = out.create_dataset("decoders", shape=(total,), dtype=STR_DTYPE)
        out.attrs.update(meta.to_attrs())
        offset = 0
        if existing_ids:
            offset = _copy_existing(cache_path, emb, labels, ids, nframes, decoders)
        # position of each new row in the output, grouped per part file (increasing within a part)
        per_file: dict[int, list[tuple[int, int]]] = {}
        for position, (_, file_no, row) in enumerate(new_rows, start=offset):
            per_file.setdefault(file_no, []).append((row, position))
        for file_no, pairs in per_file.items():
            with hdf5_errors(parts.files[file_no], PART), open_part(parts.files[file_no]) as part:
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


def _copy_existing(
    path: Path, emb: h5py.Dataset, labels: h5py.Dataset, ids: h5py.Dataset, nframes: h5py.Dataset,
    decoders: h5py.Dataset, block: int = 256,
) -> int:
    """Copy the rows of the cache at `path` to the start of the output datasets; return how many.

    The embeddings go through the cache's checked reader, so a row that is not finite is refused here
    (naming the file and the row; the parts and the old cache stay) rather than carried into the new file."""
    with FeatureCache(path) as cache, hdf5_errors(path, WHAT), open_hdf5(path, DATASET_RULES, WHAT, cache.stamp) as src:
        n = len(cache)
        for start in range(0, n, block):
            stop = min(n, start + block)
            emb[start:stop] = cache.embeddings(slice(start, stop))
            labels[start:stop] = src["labels"][start:stop]
            ids[start:stop] = src["video_ids"].asstr()[start:stop]
            nframes[start:stop] = src["num_frames"][start:stop]
            decoders[start:stop] = src["decoders"].asstr()[start:stop]
    return n
