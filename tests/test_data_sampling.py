"""TSN segment sampling, view layouts and spatial crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bike_cli.data.sampling import (
    ViewLayout,
    crop_boxes,
    parse_views,
    segment_indices,
    spatial_crops,
    video_seed,
)
from bike_cli.errors import InputError


def test_test_mode_takes_segment_centres():
    # 80 frames, 8 segments of 10: centres at 5, 15, ..., 75
    idx = segment_indices(80, 8, mode="test")
    assert idx.shape == (1, 8)
    assert idx[0].tolist() == [5, 15, 25, 35, 45, 55, 65, 75]


def test_test_mode_clips_spread_inside_each_segment():
    idx = segment_indices(80, 4, mode="test", clips=4)  # segments of 20, offsets 2.5, 7.5, 12.5, 17.5
    assert idx.shape == (4, 4)
    assert idx[:, 0].tolist() == [2, 7, 12, 17]
    assert (np.diff(idx, axis=1) == 20).all()


def test_short_video_repeats_frames_in_order():
    idx = segment_indices(3, 8, mode="test")[0]
    assert idx.min() == 0 and idx.max() == 2
    assert (np.diff(idx) >= 0).all()
    assert sorted(set(idx.tolist())) == [0, 1, 2]


def test_single_frame_video():
    assert segment_indices(1, 8, mode="train", rng=np.random.default_rng(0)).tolist() == [[0] * 8]


def test_train_mode_draws_one_frame_inside_each_segment():
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = segment_indices(100, 8, mode="train", rng=rng)[0]
        lo = np.floor(np.arange(8) * 12.5).astype(int)
        hi = np.ceil((np.arange(8) + 1) * 12.5).astype(int)  # a frame on a boundary belongs to both
        assert ((idx >= lo) & (idx < hi)).all()


def test_train_mode_is_random_but_seeded():
    draws = {tuple(segment_indices(300, 8, mode="train", rng=np.random.default_rng(s))[0]) for s in range(5)}
    assert len(draws) > 1
    again = segment_indices(300, 8, mode="train", rng=np.random.default_rng(3))
    assert (again == segment_indices(300, 8, mode="train", rng=np.random.default_rng(3))).all()


def test_video_seed_depends_on_seed_and_id_only():
    assert video_seed(0, "a.mp4") == video_seed(0, "a.mp4")
    assert video_seed(0, "a.mp4") != video_seed(1, "a.mp4")
    assert video_seed(0, "a.mp4") != video_seed(0, "b.mp4")


def test_bad_inputs_are_errors():
    with pytest.raises(InputError, match="0 frames"):
        segment_indices(0, 8)
    with pytest.raises(InputError, match="mode"):
        segment_indices(10, 8, mode="dense")


@pytest.mark.parametrize("text,expected", [("1x1", (1, 1)), ("4x3", (4, 3)), (" 2X1 ", (2, 1))])
def test_parse_views(text, expected):
    layout = parse_views(text)
    assert (layout.clips, layout.crops) == expected
    assert layout.num_views == expected[0] * expected[1]


@pytest.mark.parametrize("text", ["4", "4x2", "0x1", "ax3", "4x3x2"])
def test_parse_views_rejects_bad_layouts(text):
    with pytest.raises(InputError, match=text.strip()):
        parse_views(text)


def test_crop_boxes_landscape_and_portrait():
    assert crop_boxes(224, 300, 224, 3) == [(0, 0), (0, 38), (0, 76)]
    assert crop_boxes(300, 224, 224, 3) == [(0, 0), (38, 0), (76, 0)]
    assert crop_boxes(224, 300, 224, 1) == [(0, 38)]


def test_spatial_crops_cut_left_centre_right():
    # a frame whose pixel value is its column: each crop starts at its box's x
    cols = torch.arange(12, dtype=torch.uint8).view(1, 1, 12, 1).expand(2, 4, 12, 3)
    crops = spatial_crops(cols.contiguous(), 4, 3)
    assert crops.shape == (3, 2, 3, 4, 4)
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 4, 8]
    assert ViewLayout(4, 3).num_views == 12
