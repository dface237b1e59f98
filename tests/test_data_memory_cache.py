"""Cache rows in memory and in slabs: the same samples, batches and trained weights as the DataLoader path."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data import cached_clips
from bike_cli.data.cached_clips import (
    CachedClips,
    MemoryBatches,
    MemoryClips,
    SlabBatches,
    read_rows,
    wants_memory,
)
from bike_cli.engine.training_loop import EpochBatches, RepeatedDataset
from bike_cli.errors import InputError
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.io.feature_cache import CacheMeta, FeatureCache
from bike_cli.stages.train_video import run_train_video

STR = h5py.string_dtype("utf-8")


def write_cache(path, n=37, views=3, frames=8, dim=16, classes=5, multilabel=False):
    rng = np.random.default_rng(1)
    meta = CacheMeta(model_name="bike-tiny", pretrained="none", checkpoint_sha256=None, quick_gelu=False,
                     image_size=32, embed_dim=dim, frames=frames, clips=views, crops=1, sampling_mode="test",
                     seed=0, decoder="pyav", multilabel=multilabel, num_classes=classes)
    labels = (rng.random((n, classes)) < 0.4).astype(np.uint8) if multilabel else rng.integers(-1, classes, n)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("embeddings", data=rng.standard_normal((n, views, frames, dim)).astype(np.float16),
                          chunks=(1, views, frames, dim))
        h5.create_dataset("video_ids", data=np.array([f"v{i}" for i in range(n)], dtype=object), dtype=STR)
        h5.create_dataset("labels", data=labels)
        h5.create_dataset("num_frames", data=np.full(n, 100))
        h5.create_dataset("decoders", data=np.array(["pyav"] * n, dtype=object), dtype=STR)
        h5.attrs.update(meta.to_attrs())
    return FeatureCache(path)


@pytest.fixture
def small_slabs(monkeypatch):
    """Slabs of 3 rows (16-d, 3 views, 8 frames: 768 bytes a row), so that every read spans several."""
    monkeypatch.setattr(cached_clips, "SLAB_BYTES", 3 * 768)


def test_read_rows_of_sparse_rows_equals_row_by_row_reads(tmp_path, small_slabs):
    cache = write_cache(tmp_path / "c.h5")
    rows = np.array([0, 1, 2, 5, 6, 13, 20, 21, 36])
    got = read_rows(cache, rows, frames=np.array([1, 4, 6]))
    want = np.stack([cache.embeddings(int(r))[:, [1, 4, 6]] for r in rows])
    np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError, match="increasing"):
        read_rows(cache, [3, 2])


@pytest.mark.parametrize("multilabel", [False, True])
def test_memory_batches_equal_the_dataloader_batches(tmp_path, small_slabs, multilabel):
    cache = write_cache(tmp_path / "c.h5", multilabel=multilabel)
    rows = np.flatnonzero(np.arange(len(cache)) % 4 != 1)  # a subset, as labelled or few-shot rows are
    source = CachedClips(cache, 5, train=True, seed=3, rows=rows)  # 5 of 8 cached frames: sampled
    memory = MemoryClips(source, torch.device("cpu"), length=70)  # cycled as RepeatedDataset does
    repeated = RepeatedDataset(source, 70)
    sampler = EpochBatches(len(repeated), 16, 0, 1, seed=3)
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        memory.set_epoch(epoch)
        repeated.set_epoch(epoch)
        torch.manual_seed(0)
        want = list(DataLoader(repeated, batch_sampler=sampler))
        after_loader = torch.rand(3)
        torch.manual_seed(0)
        got = list(MemoryBatches(memory, sampler))
        assert torch.equal(torch.rand(3), after_loader)  # the global random stream moved alike
        assert len(got) == len(want) == len(MemoryBatches(memory, sampler))
        for (clips, targets), (want_clips, want_targets) in zip(got, want):
            assert clips.dtype == want_clips.dtype and targets.dtype == want_targets.dtype
            assert torch.equal(clips, want_clips) and torch.equal(targets, want_targets)


@pytest.mark.parametrize("frames, step", [(4, 2), (8, 1)])  # frames sampled, a process's share / all, read direct
def test_slab_batches_equal_the_dataloader_batches(tmp_path, small_slabs, frames, step):
    cache = write_cache(tmp_path / "c.h5")
    source = CachedClips(cache, frames, train=False, rows=np.arange(len(cache))[1::step])
    want = list(DataLoader(source, batch_size=4))
    got = list(SlabBatches(source, 4))
    assert len(got) == len(want) == len(SlabBatches(source, 4))
    for (clips, targets), (want_clips, want_targets) in zip(got, want):
        assert torch.equal(clips, want_clips) and torch.equal(targets, want_targets)


def test_auto_holds_the_rows_only_under_the_budget(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(cached_clips, "available_bytes", lambda device: 1000)
    assert wants_memory("auto", 400, cpu) and not wants_memory("auto", 600, cpu)
    assert wants_memory("on", 10**15, cpu) and not wants_memory("off", 1, cpu)
    with pytest.raises(InputError, match="--cache-in-memory 'sometimes'"):
        wants_memory("sometimes", 1, cpu)
    monkeypatch.undo()
    assert cached_clips.available_bytes(cpu) > 0


@pytest.mark.parametrize("extra", [{}, {"frames": 4, "samples_per_epoch": 60}])
def test_training_in_memory_gives_the_same_weights(tmp_path, motion_caches, extra):
    _, train, val = motion_caches
    runs = {}
    for mode in ("off", "on"):
        cfg = TrainVideoConfig(features=train, val_features=val, out=tmp_path / mode, epochs=2, batch_size=8,
                               lr=2e-3, warmup_epochs=1, workers=0, templates=["{}"], temporal_layers=2,
                               cache_in_memory=mode, **extra)
        runs[mode] = (run_train_video(cfg), load_video_checkpoint(tmp_path / mode / "last.pt"))
    (off, off_ckpt), (on, on_ckpt) = runs["off"], runs["on"]
    assert off.steps == on.steps > 0 and off.last_metrics["train_loss"] == on.last_metrics["train_loss"]
    assert off.last_metrics["val_top1"] == on.last_metrics["val_top1"]
    for key, value in off_ckpt.state_dict.items():
        torch.testing.assert_close(on_ckpt.state_dict[key], value, rtol=0, atol=0, msg=key)
