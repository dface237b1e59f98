"""The HDF5 feature cache: schema round trip, part files, merge order, resume checks."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from bike_cli.errors import CacheMismatchError, InputError
from bike_cli.io.feature_cache import (
    Batch,
    CacheMeta,
    Failure,
    FeatureCache,
    PartWriter,
    merge,
    parts_dir_for,
    remove_stale_tmp,
    scan_parts,
    write_failures_csv,
    write_meta_file,
)


def make_meta(**overrides) -> CacheMeta:
    values = dict(
        model_name="bike-tiny", pretrained="none", checkpoint_sha256=None, quick_gelu=False,
        image_size=64, embed_dim=4, frames=3, clips=1, crops=1, sampling_mode="test",
        seed=0, decoder="decord", multilabel=False, num_classes=5, class_names=("a", "b", "c", "d", "e"),
        mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), bike_version="test",
    )
    values.update(overrides)
    return CacheMeta(**values)


def make_batch(indices, rng, meta, failures=()) -> Batch:
    n = len(indices)
    return Batch(
        list_index=np.array(indices, dtype=np.int64),
        video_ids=[f"v{i}.mp4" for i in indices],
        embeddings=rng.standard_normal((n, meta.num_views, meta.frames, meta.embed_dim)).astype(np.float16),
        labels=np.array([i % meta.num_classes for i in indices], dtype=np.int64),
        num_frames=np.array([100 + i for i in indices], dtype=np.int64),
        decoders=["decord"] * n,
        failures=list(failures),
    )


def test_meta_attrs_round_trip(tmp_path):
    meta = make_meta(checkpoint_sha256="ab" * 32)
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs.update(meta.to_attrs())
    with h5py.File(path, "r") as h5:
        assert CacheMeta.from_attrs(dict(h5.attrs), path) == meta


def test_parts_merge_in_list_order_with_plain_h5py(tmp_path):
    rng = np.random.default_rng(0)
    meta = make_meta()
    cache = tmp_path / "c.h5"
    parts_dir = parts_dir_for(cache)
    write_meta_file(parts_dir, meta)
    # two "processes" interleave the list: rank 0 has 0, 2, 4; rank 1 has 1, 3
    b0, b1 = make_batch([0, 2, 4], rng, meta), make_batch([1, 3], rng, meta)
    PartWriter(parts_dir, 0).write(b0)
    PartWriter(parts_dir, 1).write(b1)
    total = merge(cache, scan_parts(parts_dir), meta)
    assert total == 5
    with h5py.File(cache, "r") as h5:  # readable with plain h5py
        assert h5["embeddings"].shape == (5, 1, 3, 4)
        assert h5["embeddings"].dtype == np.float16
        assert list(h5["video_ids"].asstr()[()]) == [f"v{i}.mp4" for i in range(5)]
        assert h5["labels"][()].tolist() == [0, 1, 2, 3, 4]
        np.testing.assert_array_equal(h5["embeddings"][1], b1.embeddings[0])
        np.testing.assert_array_equal(h5["embeddings"][4], b0.embeddings[2])
        assert CacheMeta.from_attrs(dict(h5.attrs), cache) == meta
    with FeatureCache(cache) as reader:
        assert len(reader) == 5
        np.testing.assert_array_equal(reader.embeddings(3), b1.embeddings[1])


def test_part_writer_numbers_continue_and_tmp_files_are_ignored(tmp_path):
    rng, meta = np.random.default_rng(1), make_meta()
    parts_dir = tmp_path / "p"
    parts_dir.mkdir()
    first = PartWriter(parts_dir, 0).write(make_batch([0], rng, meta))
    second = PartWriter(parts_dir, 0).write(make_batch([1], rng, meta))
    assert first.name < second.name
    (parts_dir / "rank000-0000099.h5.tmp").write_bytes(b"half written")
    index = scan_parts(parts_dir)
    assert index.done_ids == {"v0.mp4", "v1.mp4"}
    remove_stale_tmp(parts_dir)
    assert not list(parts_dir.glob("*.tmp"))


def test_unreadable_part_is_dropped_and_redone(tmp_path):
    rng, meta = np.random.default_rng(2), make_meta()
    parts_dir = tmp_path / "p"
    parts_dir.mkdir()
    PartWriter(parts_dir, 0).write(make_batch([0], rng, meta))
    (parts_dir / "rank000-0000005.h5").write_bytes(b"\x89HDF garbage")
    index = scan_parts(parts_dir)
    assert index.done_ids == {"v0.mp4"}
    assert len(list(parts_dir.glob("*.h5"))) == 1


def test_merge_appends_to_existing_cache_and_drops_rows_it_already_has(tmp_path):
    rng, meta = np.random.default_rng(3), make_meta()
    cache = tmp_path / "c.h5"
    parts_dir = parts_dir_for(cache)
    parts_dir.mkdir()
    PartWriter(parts_dir, 0).write(make_batch([0, 1], rng, meta))
    merge(cache, scan_parts(parts_dir), meta)
    # a later run: one part repeats video 1 (killed after the rename, before the cleanup)
    PartWriter(parts_dir, 0).write(make_batch([2, 3], rng, meta))
    assert merge(cache, scan_parts(parts_dir), meta) == 4
    with FeatureCache(cache) as reader:
        assert reader.video_ids == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]


def test_multilabel_labels_are_multi_hot(tmp_path):
    rng, meta = np.random.default_rng(4), make_meta(multilabel=True, num_classes=3, class_names=("a", "b", "c"))
    batch = make_batch([0, 1], rng, meta)
    batch.labels = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.uint8)
    cache = tmp_path / "c.h5"
    parts_dir = parts_dir_for(cache)
    parts_dir.mkdir()
    PartWriter(parts_dir, 0).write(batch)
    merge(cache, scan_parts(parts_dir), meta)
    with FeatureCache(cache) as reader:
        assert reader.labels.tolist() == [[1, 0, 1], [0, 1, 0]]
        assert reader.meta.multilabel


def test_incompatible_settings_name_each_difference(tmp_path):
    old, new = make_meta(), make_meta(frames=16, model_name="ViT-B-32")
    with pytest.raises(CacheMismatchError, match="frames: existing 3 vs now 16") as err:
        new.check_compatible(old, tmp_path / "c.h5")
    assert "model_name" in str(err.value) and "--overwrite" in str(err.value)
    make_meta(seed=5).check_compatible(old, tmp_path)  # the seed is irrelevant to test-mode sampling
    with pytest.raises(CacheMismatchError, match="seed"):
        make_meta(seed=5, sampling_mode="train").check_compatible(make_meta(sampling_mode="train"), tmp_path)


def test_reader_rejects_other_files(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = [1]
    with pytest.raises(InputError, match="not a bike feature cache"):
        FeatureCache(other)
    with pytest.raises(InputError, match="does not exist"):
        FeatureCache(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(InputError, match="not a readable HDF5"):
        FeatureCache(tmp_path / "text.h5")


def test_failures_csv_in_list_order(tmp_path):
    fails = [Failure(3, "b", "/x/b", "no video stream: b"), Failure(1, "a", "/x/a", "file not found: a")]
    path = write_failures_csv(tmp_path / "f.csv", fails)
    table = pd.read_csv(path)
    assert table.columns.tolist() == ["video_id", "path", "reason"]
    assert table.video_id.tolist() == ["a", "b"]
    assert pd.read_csv(write_failures_csv(tmp_path / "g.csv", [])).empty


def distinct_rows_cache(path, n=12, views=2, frames=3, dim=4) -> FeatureCache:
    """A cache whose row r holds the value r + its position / 1000 everywhere: any row read shifted by one is seen."""
    meta = make_meta(clips=views, frames=frames, embed_dim=dim)
    emb = np.arange(n, dtype=np.float32)[:, None, None, None] + np.arange(views * frames * dim).reshape(
        1, views, frames, dim) / 1000
    rng = np.random.default_rng(7)
    parts_dir = parts_dir_for(path)
    write_meta_file(parts_dir, meta)
    batch = make_batch(list(range(n)), rng, meta)
    batch.embeddings = emb.astype(np.float16)
    PartWriter(parts_dir, 0).write(batch)
    merge(path, scan_parts(parts_dir), meta)
    return FeatureCache(path)


@pytest.mark.parametrize("frames", [None, np.array([0, 2])])
def test_sparse_rows_with_a_gap_inside_one_slab_read_as_row_by_row(tmp_path, monkeypatch, frames):
    from bike_cli.data import cached_clips

    cache = distinct_rows_cache(tmp_path / "c.h5")
    row_bytes = 2 * 3 * 4 * 2  # views x frames x dim, float16
    monkeypatch.setattr(cached_clips, "SLAB_BYTES", 4 * row_bytes)  # slabs of 4 rows: 0-3, 4-7, 8-11 here
    # slab 0-3 with a gap (row 2), a slab of one row, then a gap right after a slab's first row
    rows = np.array([0, 1, 3, 5, 9, 11])
    want = np.stack([cache.embeddings(int(r)) for r in rows])  # [n, V, T, D], row by row
    want = want if frames is None else want[:, :, frames]
    got = cached_clips.read_rows(cache, rows, frames=frames)
    np.testing.assert_array_equal(got, want)
    assert got[:, 0, 0, 0].tolist() == rows.tolist()  # each row's own values, none shifted by one
    if frames is None:
        np.testing.assert_array_equal(cache.read_rows(rows), want)  # the reader's run-by-run read


def test_extract_sweeps_the_temp_files_of_a_killed_writer_beside_the_cache_and_its_failures_csv(tmp_path, sample_data):
    from typer.testing import CliRunner

    from bike_cli.cli.app import app

    out = tmp_path / "c.h5"
    stale = [tmp_path / ".c.h5.4242.0badcafe.tmp", tmp_path / ".c.failures.csv.4242.deadbeef.tmp"]
    mine = [tmp_path / name for name in ("notes.tmp", ".c.h5.mine.tmp", ".c.h5.4242.0BADCAFE.tmp",
                                         ".c.h5.4242.0badcafe.tmp.keep", ".other.h5.4242.0badcafe.tmp", ".c.h5x.4242.0badcafe.tmp",
                                         "c.failures.csv.4242.0badcafe.tmp")]
    for path in stale + mine:
        path.write_text("torn" if path in stale else "mine")
    result = CliRunner().invoke(app, ["extract-features", "--model", "bike-tiny", "--list", str(sample_data.train),
                                      "--classes", str(sample_data.classes), "--out", str(out), "--frames", "4",
                                      "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and len(FeatureCache(out)) > 0
    assert [p.name for p in stale if p.exists()] == [], "the killed writer's temporary files are swept"
    assert [p.read_text() for p in mine] == ["mine"] * len(mine), "look-alike files are not bike's to remove"
