"""The model's own image preprocessing: resize modes of the centre view, what tags agree on, the cache."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.data.clip_dataset import MultiViewClips
from bike_cli.data.decoding.read import read_frames
from bike_cli.data.sampling import ViewLayout, square_views, view_resize_mode
from bike_cli.data.synthetic import write_video
from bike_cli.data.video_lists import VideoEntry
from bike_cli.models import clip as clip_module
from bike_cli.models.clip import agreed_preprocess

runner = CliRunner()


@pytest.fixture(scope="module")
def striped_video(tmp_path_factory):
    """96 x 128 frames: white, with a red column band at the left and right edges (x < 8, x >= 120)."""
    frames = np.full((12, 96, 128, 3), 255, dtype=np.uint8)
    frames[:, :, :8] = frames[:, :, 120:] = (255, 0, 0)
    return write_video(tmp_path_factory.mktemp("striped") / "striped.mp4", frames)


def _red(pixels: torch.Tensor) -> torch.Tensor:
    """Bool [..., H, W]: red pixels of uint8 [..., 3, H, W]."""
    r, g, b = pixels.int().unbind(-3)
    return (r > 180) & (g < 90) & (b < 90)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_resize_modes_give_the_sizes_open_clip_would(striped_video, decoder):
    sizes = {mode: read_frames(striped_video, lambda n: [0, 5], short_side=64, decoder=decoder, resize=mode)
             .frames.shape[1:3] for mode in ("shortest", "squash", "longest")}
    assert sizes == {"shortest": (64, 85), "squash": (64, 64), "longest": (48, 64)}


def test_centre_view_keeps_the_whole_frame_when_squashed_and_pads_when_longest(striped_video):
    for mode, edges_kept in (("shortest", False), ("squash", True), ("longest", True)):
        clip = read_frames(striped_video, lambda n: [0, 5], short_side=64, resize=view_resize_mode(mode, 1))
        view = square_views(clip.frames, 64, 1, mode)  # [1, T, 3, 64, 64]
        assert view.shape == (1, 2, 3, 64, 64)
        red = _red(view[0, 0])[8:56]  # [48, 64]: the rows with picture in every mode
        assert bool(red[:, :2].all() and red[:, -2:].all()) == edges_kept, mode  # shortest crops the bands off
    longest = square_views(read_frames(striped_video, lambda n: [0], short_side=64, resize="longest").frames,
                           64, 1, "longest")
    assert not longest[0, 0, :, :8].any() and not longest[0, 0, :, -8:].any()  # black bars above and below
    assert longest[0, 0, :, 8:56].float().mean() > 150


def test_three_crop_views_stay_square_crops_of_the_short_side_resize(striped_video):
    assert view_resize_mode("squash", 3) == "shortest"
    dataset = MultiViewClips([(0, VideoEntry("v", striped_video, (0,), 1))], frames=2, layout=ViewLayout(1, 3),
                             size=64, resize_mode="squash")
    views = dataset[0].frames  # [3, T, 3, 64, 64]
    assert views.shape == (3, 2, 3, 64, 64)
    assert _red(views[0, 0])[:, :4].all() and not _red(views[1, 0]).any() and _red(views[2, 0])[:, -4:].all()


def test_checkpoint_files_and_random_weights_take_what_the_tags_agree_on():
    siglip = agreed_preprocess("ViT-B-16-SigLIP2")
    assert siglip["resize_mode"] == "squash" and siglip["mean"] == (0.5, 0.5, 0.5)
    assert "mean" not in agreed_preprocess("ViT-L-14")  # its tags disagree (OpenAI vs 0.5): defaults stay
    assert agreed_preprocess("bike-tiny") == {}


def test_the_cache_records_the_models_resize_mode(tmp_path, sample_data, monkeypatch):
    squash = {"resize_mode": "squash", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear"}
    monkeypatch.setattr(clip_module, "agreed_preprocess", lambda name: squash)
    model, spec = clip_module.load_clip("bike-tiny", "none")
    assert (spec.resize_mode, spec.mean, spec.interpolation) == ("squash", (0.5, 0.5, 0.5), "bilinear")
    for views in ("1x1", "1x3"):
        out = tmp_path / f"{views}.h5"
        result = runner.invoke(app, ["extract-features", "--model", "bike-tiny", "--list", str(sample_data.train), "--classes",
                                     str(sample_data.classes), "--out", str(out), "--frames", "2", "--workers", "0",
                                     "--views", views])
        assert result.exit_code == 0, result.output
        with h5py.File(out, "r") as h5:
            assert h5.attrs["resize_mode"] == ("squash" if views == "1x1" else "shortest")
            assert h5.attrs["interpolation"] == "bilinear" and h5.attrs["mean"] == "[0.5, 0.5, 0.5]"
