"""S_A, the one computation of the Attributes branch's per-video scores (`models.attributes.attribute_scores`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bike_cli.models.attributes import attribute_scores, video_rows

SCORES = {"a dog": [1.0, 0.0, 2.0], "a cat": [0.0, 3.0, 1.0], "a bird": [4.0, 1.0, 0.0]}  # sentence -> [K]


class Calls:
    """A row scorer that looks each sentence up and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def __call__(self, sentences):
        self.asked.append(list(sentences))
        return torch.tensor([SCORES[s] for s in sentences], dtype=torch.float32)


class Recorder:
    def __init__(self) -> None:
        self.total, self.advanced, self.stopped = None, 0, False

    def start(self, total: int, description: str) -> None:
        self.total = total

    def advance(self, n: int) -> None:
        self.advanced += n

    def stop(self) -> None:
        self.stopped = True


def test_each_videos_rows_are_averaged_wherever_they_lie_in_order_of_first_appearance():
    sentences = ["a dog", "a cat", "a dog", "a bird", "a cat", "a cat"]
    videos = ["v2", "v1", "v2", "v2", "v3", "v1"]  # interleaved; chunks of 2 split v2 and v1
    progress = Recorder()
    ids, scores = attribute_scores(Calls(), sentences, videos, chunk_rows=2, progress=progress)
    assert ids == ["v2", "v1", "v3"]
    expected = np.array([np.mean([SCORES[s] for s, v in zip(sentences, videos) if v == vid], axis=0) for vid in ids])
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert scores.dtype == np.float32
    assert (progress.total, progress.advanced, progress.stopped) == (3, 3, True)  # counted in videos


def test_each_distinct_sentence_of_a_chunk_is_scored_once():
    calls = Calls()
    ids, scores = attribute_scores(calls, ["a dog", "a dog", "a cat", "a cat", "a dog", "a dog"],
                                   ["x", "x", "y", "y", "z", "z"], chunk_rows=4)
    assert calls.asked == [["a dog", "a cat"], ["a dog"]]
    np.testing.assert_allclose(scores, [SCORES["a dog"], SCORES["a cat"], SCORES["a dog"]])


def test_tensor_rows_are_scored_as_they_are():
    inputs = torch.arange(12, dtype=torch.float32).view(6, 2)  # e.g. sentence embeddings [R, D]
    seen = []

    def score(rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.shape[0])
        return rows.sum(1, keepdim=True).repeat(1, 2)  # [r, 2]

    ids, scores = attribute_scores(score, inputs, ["a", "a", "a", "b", "b", "c"], chunk_rows=4)
    assert ids == ["a", "b", "c"] and seen == [4, 2]
    np.testing.assert_allclose(scores[:, 0], [(1 + 5 + 9) / 3, (13 + 17) / 2, 21])


def test_rows_and_video_ids_must_match():
    with pytest.raises(ValueError, match="2 attribute rows but 1 video ids"):
        attribute_scores(Calls(), ["a dog", "a cat"], ["v"])
    with pytest.raises(ValueError, match="at least one row"):
        attribute_scores(Calls(), [], [])


def test_video_rows_numbers_videos_by_first_appearance():
    ids, codes = video_rows(["b", "a", "b", "c", "a"])
    assert ids == ["b", "a", "c"]
    assert codes.tolist() == [0, 1, 0, 2, 1]
