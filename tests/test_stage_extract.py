"""`extract-features` end to end: real decoding, the tiny model, real HDF5 files, resume, failures."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from corrupt_video import write_corrupt_video

from bike_cli.config.stages import ExtractConfig
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import segment_indices
from bike_cli.errors import CacheMismatchError
from bike_cli.io.feature_cache import FeatureCache, parts_dir_for
from bike_cli.models.clip import load_clip
from bike_cli.stages.extract import run_extraction

REAL_VIDEOS = [
    "arm_wrestling.mp4", "arm_wrestling_vp9.webm", "cleaning_pool.mp4", "apply_eye_makeup.avi",
    "basketball.mp4", "flipping_pancake.mkv", "rotated90_3frames.mov",
]


def reference_embeddings(path, frames: int, model, spec) -> torch.Tensor:
    """encode_image on the test-mode frames of `path`, centre-cropped by hand: float [T, D]."""
    clip = read_frames(path, lambda n: segment_indices(n, frames).ravel(), short_side=spec.image_size)
    x = clip.frames.permute(0, 3, 1, 2).float() / 255.0  # [T, 3, H, W]
    h, w = x.shape[-2:]
    top, left = (h - spec.image_size) // 2, (w - spec.image_size) // 2
    x = x[:, :, top : top + spec.image_size, left : left + spec.image_size]
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.encode_image((x - mean) / std)


@pytest.fixture
def real_list(tmp_path, shared_clips):
    lines = [f"{name} {i}" for i, name in enumerate(REAL_VIDEOS)]
    lines += ["nasa_audio_only.mp3 7", "missing_video.mp4 8"]
    listing = tmp_path / "real.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def test_real_clips_are_cached_in_list_order_and_bad_ones_listed(tmp_path, real_list, shared_clips):
    out = tmp_path / "real.h5"
    cfg = ExtractConfig(list_path=real_list, root=shared_clips, out=out, frames=8, views="1x1", workers=1)
    summary = run_extraction(cfg)
    assert summary.extracted == len(REAL_VIDEOS) and summary.failed == 2
    cache = FeatureCache(out)
    assert cache.video_ids == REAL_VIDEOS
    assert cache.labels.tolist() == list(range(len(REAL_VIDEOS)))
    assert cache.embeddings(slice(None)).shape == (len(REAL_VIDEOS), 1, 8, cache.meta.embed_dim)
    failures = pd.read_csv(summary.failures_csv)
    assert failures.video_id.tolist() == ["nasa_audio_only.mp3", "missing_video.mp4"]
    assert "no video stream" in failures.reason[0] and "file not found" in failures.reason[1]


def test_cache_embeddings_equal_encode_image(tmp_path, shared_clips):
    ckpt = tmp_path / "tiny.pt"
    model, spec = load_clip("bike-tiny", "none")
    torch.save(model.state_dict(), ckpt)  # a fixed checkpoint, so the test and the stage share weights
    listing = tmp_path / "l.txt"
    listing.write_text("".join(f"{name} 0\n" for name in REAL_VIDEOS))
    out = tmp_path / "c.h5"
    run_extraction(ExtractConfig(list_path=listing, root=shared_clips, out=out, pretrained=str(ckpt), frames=8, workers=0))
    cache = FeatureCache(out)
    assert cache.meta.checkpoint_sha256 is not None and cache.meta.pretrained == str(ckpt.resolve())
    for row, name in enumerate(REAL_VIDEOS):
        expected = reference_embeddings(shared_clips / name, 8, model, spec)
        got = torch.from_numpy(cache.embeddings(row)[0].astype(np.float32))  # [T, D]
        torch.testing.assert_close(got, expected, atol=2e-3 * expected.abs().max().item(), rtol=1e-2)


def test_views_and_multilabel_lists(tmp_path, sample_data):
    listing = tmp_path / "ml.csv"
    rows = pd.read_csv(sample_data.train)
    rows["label"] = ["0;2", "1", "3;1", ""] + ["2"] * (len(rows) - 4)
    rows.to_csv(listing, index=False)
    out = tmp_path / "ml.h5"
    cfg = ExtractConfig(list_path=listing, root=sample_data.root, out=out, frames=4, views="2x3",
                        classes=sample_data.classes, workers=0, batch_size=3)
    run_extraction(cfg)
    cache = FeatureCache(out)
    assert cache.meta.multilabel and cache.meta.num_views == 6
    assert cache.embeddings(slice(None)).shape == (len(rows), 6, 4, 64)
    assert cache.labels[:4].tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]
    emb = cache.embeddings(0).astype(np.float32)  # the 6 views differ from each other
    assert all(not np.allclose(emb[0], emb[v]) for v in range(1, 6))


def test_rerun_skips_finished_videos_and_extends_with_new_ones(tmp_path, sample_data):
    rows = pd.read_csv(sample_data.train)
    half = tmp_path / "half.csv"
    rows.iloc[: len(rows) // 2].to_csv(half, index=False)
    out = tmp_path / "c.h5"
    common = dict(root=sample_data.root, out=out, classes=sample_data.classes, frames=4, workers=0)
    first = run_extraction(ExtractConfig(list_path=half, **common))
    assert first.extracted == len(rows) // 2
    again = run_extraction(ExtractConfig(list_path=half, **common))
    assert again.extracted == 0 and again.already_done == len(rows) // 2
    full = run_extraction(ExtractConfig(list_path=sample_data.train, **common))
    assert full.already_done == len(rows) // 2 and full.extracted == len(rows) - len(rows) // 2
    fresh = tmp_path / "fresh.h5"
    run_extraction(ExtractConfig(list_path=sample_data.train, **{**common, "out": fresh}))
    a, b = FeatureCache(out), FeatureCache(fresh)
    assert a.video_ids == b.video_ids
    np.testing.assert_array_equal(a.embeddings(slice(None)), b.embeddings(slice(None)))
    assert not parts_dir_for(out).exists()


def test_other_settings_against_existing_cache_are_an_error_unless_overwrite(tmp_path, sample_data):
    common = dict(list_path=sample_data.val, root=sample_data.root, out=tmp_path / "c.h5",
                  classes=sample_data.classes, workers=0)
    run_extraction(ExtractConfig(frames=4, **common))
    before = (tmp_path / "c.h5").read_bytes()
    with pytest.raises(CacheMismatchError, match="frames: existing 4 vs now 6"):
        run_extraction(ExtractConfig(frames=6, **common))
    assert (tmp_path / "c.h5").read_bytes() == before  # nothing already written is lost
    redone = run_extraction(ExtractConfig(frames=6, overwrite=True, **common))
    assert FeatureCache(tmp_path / "c.h5").meta.frames == 6 and redone.extracted == redone.videos_in_list


def test_corrupt_and_audio_only_files_go_to_failures_csv(tmp_path, sample_data, shared_clips):
    bad = write_corrupt_video(tmp_path / "broken.mp4")
    good = sample_data.root / pd.read_csv(sample_data.val).path[0]
    shutil.copy(shared_clips / "nasa_audio_only.mp3", tmp_path / "audio.mp3")
    shutil.copy(good, tmp_path / "good.mp4")
    listing = tmp_path / "l.txt"
    listing.write_text(f"{bad.name} 0\naudio.mp3 1\ngood.mp4 2\n")
    failures = tmp_path / "fails.csv"
    summary = run_extraction(ExtractConfig(list_path=listing, out=tmp_path / "c.h5", failures=failures, workers=0))
    assert summary.failed == 2 and summary.extracted == 1
    table = pd.read_csv(failures)
    assert table.video_id.tolist() == ["broken.mp4", "audio.mp3"]
    assert "no video stream" in table.reason[1]
    assert FeatureCache(tmp_path / "c.h5").video_ids == ["good.mp4"]
