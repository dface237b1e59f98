"""The authors' 5- and 10-crop test views (test.py `--test_crops 5 / 10`: `GroupOverSample`).

Their formulas, written out here from datasets/transforms.py: `GroupMultiScaleCrop.fill_fix_offset(False,
...)` gives the offsets (x, y) upper left (0, 0), upper right (4 ws, 0), lower left (0, 4 hs), lower right
(4 ws, 4 hs), centre (2 ws, 2 hs), with ws = (W - size) // 4 and hs = (H - size) // 4 on the
short-side-resized frame; `GroupOverSample` appends, per offset, the crops and then (10 crops only) their
`Image.FLIP_LEFT_RIGHT` copies: crop 0, flip 0, crop 1, flip 1, ...
"""

from __future__ import annotations

import decord
import numpy as np
import pytest
import torch
import torchvision.transforms as TV
from PIL import Image
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.profile import AUTHORS, get_profile
from bike_cli.data.class_names import read_class_names
from bike_cli.data.sampling import ViewLayout, authors_crop_boxes, authors_flips, authors_views, parse_views
from bike_cli.data.video_lists import read_video_list
from bike_cli.errors import InputError
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import read_score_csv
from bike_cli.models.clip import load_clip

runner = CliRunner()
FRAMES, SIZE = 4, 64


def _their_offsets(w: int, h: int, size: int) -> list[tuple[int, int]]:
    """(x, y) of fill_fix_offset(more_fix_crop=False, w, h, size, size)."""
    ws, hs = (w - size) // 4, (h - size) // 4
    return [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]


def _their_views(img: Image.Image, size: int, crops: int) -> list[Image.Image]:
    """GroupOverSample(size, scale_size, flip=crops == 10) of one frame: PIL images in their order."""
    scaled = TV.Resize(256 if size == 224 else size, TV.InterpolationMode.BICUBIC)(img)
    out = []
    for x, y in _their_offsets(*scaled.size, size):
        crop = scaled.crop((x, y, x + size, y + size))
        out.append(crop)
        if crops == 10:
            out.append(crop.copy().transpose(Image.FLIP_LEFT_RIGHT))
    return out


@pytest.mark.parametrize("height,width,size", [(240, 320, 224), (96, 128, 64), (101, 203, 64), (203, 101, 64),
                                               (257, 333, 224)])
def test_five_and_ten_crop_boxes_are_their_fill_fix_offset(height, width, size):
    w, h = TV.Resize(256 if size == 224 else size)(Image.new("RGB", (width, height))).size
    five = [(y, x) for x, y in _their_offsets(w, h, size)]  # bike's boxes are (y, x)
    assert authors_crop_boxes(h, w, size, 5) == five
    assert authors_crop_boxes(h, w, size, 10) == [box for box in five for _ in range(2)]
    assert authors_flips(5) == [False] * 5
    assert authors_flips(10) == [False, True] * 5
    assert authors_flips(1) == [False] and authors_flips(3) == [False] * 3


@pytest.mark.parametrize("height,width", [(101, 203), (96, 128)])
def test_ten_views_are_their_crops_and_exact_horizontal_flips(height, width):
    frames = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, height, width, 3), dtype=np.uint8))
    views = authors_views(frames, SIZE, 10)  # [10, 2, 3, s, s]
    assert views.shape == (10, 2, 3, SIZE, SIZE)
    for k in range(5):
        torch.testing.assert_close(views[2 * k + 1], views[2 * k].flip(-1), rtol=0, atol=0)  # mirrored columns
        assert not torch.equal(views[2 * k + 1], views[2 * k])
    for n, frame in enumerate(frames.numpy()):
        expected = _their_views(Image.fromarray(frame), SIZE, 10)
        for v, image in enumerate(expected):
            np.testing.assert_array_equal(views[v, n].permute(1, 2, 0).numpy(), np.asarray(image))
    torch.testing.assert_close(authors_views(frames, SIZE, 5), views[0::2], rtol=0, atol=0)


def test_parse_views_takes_5_and_10_crops_only_under_the_authors_profile():
    assert parse_views("1x5", get_profile(AUTHORS)) == ViewLayout(1, 5)
    assert parse_views("2x10", get_profile(AUTHORS)) == ViewLayout(2, 10)
    assert parse_views("4x3", get_profile(AUTHORS)) == ViewLayout(4, 3)
    with pytest.raises(InputError, match=r"must be 1 or 3, not 5.*--compat authors"):
        parse_views("1x5")
    with pytest.raises(InputError, match=r"'1x4'.*1, 3, 5 or 10.*not 4"):
        parse_views("1x4", get_profile(AUTHORS))


def _reference_embeddings(path, crops: int) -> np.ndarray:
    """[crops, T, D] frame embeddings of their test pipeline: indices, GroupOverSample, normalisation."""
    vr = decord.VideoReader(str(path))
    tick = len(vr) / FRAMES
    images = [Image.fromarray(vr[int(tick * x) % len(vr)].asnumpy()) for x in range(FRAMES)]  # one clip at 0
    per_view = list(zip(*[_their_views(img, SIZE, crops) for img in images]))  # [S][T]
    model, spec = load_clip("bike-tiny", "none")
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    pixels = torch.stack([(TV.functional.to_tensor(im) - mean) / std for group in per_view for im in group])
    with torch.no_grad():
        return model.encode_image(pixels).view(crops, FRAMES, -1).numpy()


def test_extract_features_compat_authors_1x10_caches_their_ten_views(tmp_path, sample_data):
    out = tmp_path / "ten.h5"
    result = runner.invoke(app, ["extract-features", "--list", str(sample_data.val), "--classes",
                                 str(sample_data.classes), "--out", str(out), "--frames", str(FRAMES),
                                 "--workers", "0", "--model", "bike-tiny", "--compat", "authors", "--views", "1x10"])
    assert result.exit_code == 0, result.output
    cache = FeatureCache(out)
    assert (cache.meta.clips, cache.meta.crops, cache.meta.compat) == (1, 10, "authors")
    names = read_class_names(sample_data.classes)
    entries = read_video_list(sample_data.val, class_names=names).entries
    assert len(cache) == len(entries)
    for row, entry in enumerate(entries[:2]):
        assert cache.video_ids[row] == entry.video_id
        stored = cache.embeddings(row).astype(np.float32)  # [V, T, D], fp16 storage
        assert stored.shape == (10, FRAMES, 64)
        np.testing.assert_allclose(stored, _reference_embeddings(entry.path, 10), rtol=2e-3, atol=2e-3)
        assert not np.allclose(stored[0], stored[1], atol=1e-2)  # the flip is a different view


def test_eval_videos_compat_authors_1x5_scores_as_its_cache(tmp_path, sample_data):
    common = ["--classes", str(sample_data.classes), "--model", "bike-tiny", "--pretrained", "none",
              "--frames", str(FRAMES), "--workers", "0", "--compat", "authors", "--views", "1x5"]
    cache = tmp_path / "five.h5"
    extracted = runner.invoke(app, ["extract-features", "--list", str(sample_data.val), "--out", str(cache),
                                    "--classes", str(sample_data.classes), "--model", "bike-tiny",
                                    "--frames", str(FRAMES), "--workers", "0", "--compat", "authors",
                                    "--views", "1x5"])
    assert extracted.exit_code == 0, extracted.output
    assert FeatureCache(cache).embeddings(0).shape == (5, FRAMES, 64)
    for name, source in (("videos", ["--videos", str(sample_data.val)]), ("cache", ["--features", str(cache)])):
        result = runner.invoke(app, ["eval", *source, *common, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    a = read_score_csv(tmp_path / "videos" / "video_scores.csv")
    b = read_score_csv(tmp_path / "cache" / "video_scores.csv")
    assert a.video_ids == b.video_ids
    np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)  # cache embeddings are float16


@pytest.mark.parametrize("height,width", [(64, 119), (119, 64), (67, 67), (101, 119)])
def test_one_centre_crop_rounds_a_half_offset_as_torchvisions_center_crop(height, width):
    """Offsets such as (119 - 64) / 2 = 27.5: torchvision's CenterCrop rounds them (28), a floor would give 27."""
    frames = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (2, height, width, 3), dtype=np.uint8))
    y, x = authors_crop_boxes(height, width, SIZE, 1)[0]
    chw = frames.permute(0, 3, 1, 2)  # [N, 3, H, W]
    torch.testing.assert_close(chw[:, :, y : y + SIZE, x : x + SIZE], TV.CenterCrop(SIZE)(chw), rtol=0, atol=0)
    views = authors_views(frames, SIZE, 1)  # short side already SIZE: the resize keeps the frame
    for n, frame in enumerate(frames.numpy()):
        scaled = TV.Resize(SIZE, TV.InterpolationMode.BICUBIC)(Image.fromarray(frame))
        expected = np.asarray(TV.CenterCrop(SIZE)(scaled))  # the same crop, decoded pixels compared exactly
        np.testing.assert_array_equal(views[0, n].permute(1, 2, 0).numpy(), expected)
