"""The search index is a cache, not an authority (issue 28): an index of the wrong kind, shape, dtype,
row count or with non-finite vectors is rebuilt with a warning, never a traceback nor a wrong answer;
staleness is decided by the cache's content, not by its size and mtime."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from test_stage_search import DIM, make_cache

from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.search_index import index_path
from bike_cli.models.heads import video_vectors
from bike_cli.stages import search as stage

ROWS = 20
MARKER = b"PRIVATE-MARKER-28."


@pytest.fixture
def indexed(tmp_path) -> Path:
    """A cache of ROWS videos with a fresh index beside it (and no index held in memory)."""
    emb = np.random.default_rng(3).standard_normal((ROWS, 1, 4, DIM)).astype(np.float32)
    path = make_cache(tmp_path / "cache.h5", emb)
    stage._MEMO.clear()
    assert stage.load_index(FeatureCache(path), stage.Progress())[1]["built"]
    stage._MEMO.clear()
    return path


def rewrite_index(cache: Path, make) -> Path:
    """Replace the index's /vectors by what `make(h5, good_vectors, folder)` writes; its attributes stay."""
    path = index_path(cache)
    with h5py.File(path, "r+") as h5:
        good = h5["vectors"][()]
        del h5["vectors"]
        make(h5, good, cache.parent)
    return path


def nan_row(h5, good, _):
    good[2, 5] = np.nan
    h5["vectors"] = good


def external(h5, good, folder):
    private = folder / "private.txt"
    private.write_bytes((MARKER * (good.nbytes // len(MARKER) + 1))[:good.nbytes])
    h5.create_dataset("vectors", shape=good.shape, dtype=good.dtype, external=[(str(private), 0, good.nbytes)])


def array_version(h5, good, _):
    h5["vectors"] = good
    h5.attrs["schema_version"] = np.array([2, 2])


BAD = {
    "a group": lambda h5, good, _: h5.create_group("vectors"),
    "strings": lambda h5, good, _: h5.create_dataset("vectors", data=np.array(["x"] * len(good), dtype=object),
                                                     dtype=h5py.string_dtype()),
    "1-D": lambda h5, good, _: h5.__setitem__("vectors", good[:, 0]),
    "float32": lambda h5, good, _: h5.__setitem__("vectors", good.astype(np.float32)),
    "fewer rows than the cache": lambda h5, good, _: h5.__setitem__("vectors", good[:-3]),
    "a NaN vector": nan_row,
    "external storage on a private file": external,
    "an array-valued schema_version": array_version,
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_malformed_index_is_rebuilt_with_a_warning(indexed, case, caplog):
    path = rewrite_index(indexed, BAD[case])
    cache = FeatureCache(indexed)
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        vectors, info = stage.load_index(cache, stage.Progress())
    assert info["built"]
    assert f"search index {path} cannot be used" in caplog.text
    torch.testing.assert_close(vectors.float(), video_vectors(cache.embeddings(slice(None))), atol=1e-3, rtol=0)
    assert MARKER not in path.read_bytes()


def test_a_cache_rewritten_in_place_with_its_size_and_mtime_kept_gets_a_new_index(indexed):
    before = os.stat(indexed)
    new = np.random.default_rng(9).standard_normal((ROWS, 1, 4, DIM)).astype(np.float16)
    with h5py.File(indexed, "r+") as h5:
        h5["embeddings"][...] = new
    os.utime(indexed, ns=(before.st_atime_ns, before.st_mtime_ns))  # as cp -p, rsync -a or touch -r leave it
    assert os.stat(indexed).st_size == before.st_size and os.stat(indexed).st_mtime_ns == before.st_mtime_ns
    vectors, info = stage.load_index(FeatureCache(indexed), stage.Progress())
    assert info["built"]
    torch.testing.assert_close(vectors.float(), video_vectors(torch.from_numpy(new)), atol=1e-3, rtol=0)


def test_a_cache_copied_with_its_index_reuses_it_by_content_and_restamps_it(indexed, tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere" / "cache.h5"
    copy.parent.mkdir()
    shutil.copy2(indexed, copy)
    shutil.copy2(index_path(indexed), index_path(copy))
    monkeypatch.setattr(stage, "build_index", lambda *a: pytest.fail("an index of the same content was rebuilt"))
    assert stage.load_index(FeatureCache(copy), stage.Progress())[1]["built"] is False
    with h5py.File(index_path(copy)) as h5:
        assert h5.attrs["cache_inode"] == os.stat(copy).st_ino  # the next process skips the sha256


@pytest.mark.slow
def test_search_with_a_nan_index_rebuilds_it_and_returns_top_finite_hits(indexed, tmp_path):
    index = rewrite_index(indexed, nan_row)
    hits = tmp_path / "hits.csv"
    done = subprocess.run([sys.executable, "-m", "bike_cli", "search", "--features", str(indexed), "a dog", "--rule",
                           "mean", "--top", str(ROWS), "--out", str(hits)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and f"{index} cannot be used" in " ".join(done.stderr.split())
    with open(hits, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == ROWS and all(np.isfinite(float(r["score"])) for r in rows)
    assert "nan" not in hits.read_text().lower()
