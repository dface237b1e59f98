"""Few-shot sampling: K per class, reproducible by seed."""

from __future__ import annotations

import numpy as np
import pytest

from bike_cli.data.sampling import few_shot_indices
from bike_cli.errors import InputError


def test_k_videos_per_class_and_reproducible():
    labels = np.repeat(np.arange(5), 10)  # 5 classes x 10 videos
    picked = few_shot_indices(labels, 2, seed=7)
    assert np.bincount(labels[picked]).tolist() == [2] * 5
    assert (picked == few_shot_indices(labels, 2, seed=7)).all()
    assert not np.array_equal(picked, few_shot_indices(labels, 2, seed=8))


def test_other_classes_keep_their_picks_when_a_class_changes():
    labels = np.repeat(np.arange(3), 10)
    before = set(few_shot_indices(labels, 3, seed=0).tolist())
    labels2 = labels.copy()
    labels2[labels2 == 2] = -1  # class 2 drops out: classes 0 and 1 draw the same videos
    after = set(few_shot_indices(labels2, 3, seed=0).tolist())
    assert after == {i for i in before if labels[i] != 2}


def test_small_classes_unknown_labels_and_multilabel():
    labels = np.array([0, 0, 0, 1, -1, -1])
    assert few_shot_indices(labels, 2, seed=0).tolist().count(3) == 1  # class 1 has one video
    assert 4 not in few_shot_indices(labels, 5, seed=0) and 5 not in few_shot_indices(labels, 5, seed=0)
    hot = np.array([[1, 0], [1, 1], [0, 1], [0, 1]], dtype=np.uint8)
    picked = few_shot_indices(hot, 1, seed=0)
    assert hot[picked].sum(axis=0).min() >= 1


def test_zero_shots_is_an_error():
    with pytest.raises(InputError, match="--shots"):
        few_shot_indices(np.array([0, 1]), 0, seed=0)
