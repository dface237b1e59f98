"""Recognition metrics against hand-computed values and brute-force loops (ties included)."""

from __future__ import annotations

import numpy as np
import pytest

from bike_cli.eval.metrics import (
    average_precision,
    mean_average_precision,
    mean_class_accuracy,
    recognition_metrics,
    topk_accuracy,
)

# ----------------------------------------------------------------------------- brute force


def brute_ranking(row) -> list[int]:
    """Class indices from best to worst: higher score first, lower index first on ties."""
    return sorted(range(len(row)), key=lambda k: (-float(row[k]), k))


def brute_topk(scores, labels, k) -> float:
    hits, total = 0, 0
    for row, label in zip(scores, labels):
        if label < 0:
            continue
        total += 1
        hits += label in brute_ranking(row)[:k]
    return 100.0 * hits / total


def brute_mean_class_accuracy(scores, labels) -> float:
    per_class = {}
    for row, label in zip(scores, labels):
        if label < 0:
            continue
        correct, count = per_class.get(int(label), (0, 0))
        per_class[int(label)] = (correct + (brute_ranking(row)[0] == label), count + 1)
    return 100.0 * sum(c / n for c, n in per_class.values()) / len(per_class)


def brute_average_precision(scores, targets) -> float:
    """Mean over the positives of the precision at their rank (rows sorted by score, earlier row first on ties)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    precisions, found = [], 0
    for rank, i in enumerate(order, start=1):
        if targets[i]:
            found += 1
            precisions.append(found / rank)
    return sum(precisions) / len(precisions)


def brute_map(scores, targets) -> float:
    aps = [brute_average_precision(scores[:, k], targets[:, k]) for k in range(targets.shape[1]) if targets[:, k].any()]
    return 100.0 * sum(aps) / len(aps)


# ----------------------------------------------------------------------------- top-k


def test_topk_hand_computed():
    scores = np.array([[0.1, 0.5, 0.3, 0.1],   # label 1: rank 0
                       [0.6, 0.1, 0.2, 0.1],   # label 2: rank 1
                       [0.4, 0.3, 0.2, 0.1]])  # label 3: rank 3
    labels = np.array([1, 2, 3])
    acc = topk_accuracy(scores, labels, ks=(1, 2, 3, 4))
    assert acc["top1"] == pytest.approx(100 / 3)
    assert acc["top2"] == pytest.approx(200 / 3)
    assert acc["top3"] == pytest.approx(200 / 3)
    assert acc["top4"] == pytest.approx(100.0)


def test_topk_skips_unknown_labels():
    scores = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8]])
    acc = topk_accuracy(scores, np.array([0, -1, 0]), ks=(1,))
    assert acc["top1"] == pytest.approx(50.0)  # the -1 row would otherwise be a third video


def test_topk_all_unknown_is_nan():
    assert np.isnan(topk_accuracy(np.ones((2, 3)), np.array([-1, -1]))["top1"])


def test_topk_ties_go_to_the_lower_class_index():
    constant = np.zeros((3, 4))
    acc = topk_accuracy(constant, np.array([0, 2, 3]), ks=(1, 3))
    assert acc["top1"] == pytest.approx(100 / 3)  # only the class-0 video: ties are not all hits
    assert acc["top3"] == pytest.approx(200 / 3)  # class 3 ranks 4th among four equal scores
    tied = np.array([[0.5, 0.5, 0.1]])
    assert topk_accuracy(tied, np.array([1]), ks=(1, 2)) == {"top1": 0.0, "top2": 100.0}
    assert topk_accuracy(tied, np.array([0]), ks=(1,))["top1"] == 100.0


def test_topk_agrees_with_argmax_on_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=(200, 5)).astype(np.float32)  # many ties
    labels = rng.integers(0, 5, size=200)
    expected = 100.0 * float((scores.argmax(1) == labels).mean())
    assert topk_accuracy(scores, labels, ks=(1,))["top1"] == pytest.approx(expected)


@pytest.mark.parametrize("levels", [None, 4])  # continuous scores, and scores with many ties
def test_topk_matches_brute_force(levels):
    rng = np.random.default_rng(0 if levels is None else 1)
    scores = rng.random((120, 9)) if levels is None else rng.integers(0, levels, (120, 9)).astype(float)
    labels = rng.integers(-1, 9, size=120)
    acc = topk_accuracy(scores, labels, ks=(1, 3, 5, 9, 20))
    for k in (1, 3, 5, 9, 20):
        assert acc[f"top{k}"] == pytest.approx(brute_topk(scores, labels, k))


# ----------------------------------------------------------------------------- mean class accuracy


def test_mean_class_accuracy_hand_computed():
    # class 0: 2 of 2 right; class 1: 1 of 3 right; class 2: no videos (not averaged); one unknown row
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0],
                       [0.7, 0.2, 0.1], [0.3, 0.2, 0.5], [0.0, 1.0, 0.0]])
    labels = np.array([0, 0, 1, 1, 1, -1])
    assert mean_class_accuracy(scores, labels) == pytest.approx(100 * (1.0 + 1 / 3) / 2)
    assert topk_accuracy(scores, labels, ks=(1,))["top1"] == pytest.approx(60.0)  # 3 of 5: differs


@pytest.mark.parametrize("levels", [None, 3])
def test_mean_class_accuracy_matches_brute_force(levels):
    rng = np.random.default_rng(7)
    scores = rng.random((150, 6)) if levels is None else rng.integers(0, levels, (150, 6)).astype(float)
    labels = rng.integers(-1, 6, size=150)
    assert mean_class_accuracy(scores, labels) == pytest.approx(brute_mean_class_accuracy(scores, labels))


# ----------------------------------------------------------------------------- AP and mAP


def test_average_precision_hand_computed():
    scores = np.array([0.6, 0.9, 0.7, 0.8])
    targets = np.array([0, 1, 1, 0])  # ranked: 0.9 (+), 0.8, 0.7 (+), 0.6 -> (1 + 2/3) / 2
    assert average_precision(scores, targets) == pytest.approx(5 / 6)
    assert average_precision(scores, np.array([1, 0, 0, 0])) == pytest.approx(1 / 4)
    assert average_precision(scores, np.ones(4)) == pytest.approx(1.0)


def test_average_precision_ties_follow_row_order():
    scores = np.array([0.5, 0.5, 0.1])
    assert average_precision(scores, np.array([0, 1, 0])) == pytest.approx(1 / 2)  # the earlier row ranks first
    assert average_precision(scores, np.array([1, 0, 0])) == pytest.approx(1.0)


def test_average_precision_without_positives_is_nan():
    assert np.isnan(average_precision(np.array([0.3, 0.2]), np.array([0, 0])))


def test_map_hand_computed_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.4, 0.3, 0.6]])
    targets = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    # class 0: rows ranked 0 (+), 2 (+) -> AP 1; class 1: ranked 1, 2 (+), 0 -> AP 1/2; class 2: no positive
    assert mean_average_precision(scores, targets) == pytest.approx(75.0)


@pytest.mark.parametrize("levels", [None, 3])
def test_map_matches_brute_force(levels):
    rng = np.random.default_rng(11)
    scores = rng.random((60, 8)) if levels is None else rng.integers(0, levels, (60, 8)).astype(float)
    targets = (rng.random((60, 8)) < 0.2).astype(np.uint8)
    targets[:, 5] = 0  # a class without positives is left out of the mean
    for k in range(8):
        if targets[:, k].any():
            assert average_precision(scores[:, k], targets[:, k]) == pytest.approx(
                brute_average_precision(scores[:, k], targets[:, k]))
    assert mean_average_precision(scores, targets) == pytest.approx(brute_map(scores, targets))


# ----------------------------------------------------------------------------- the standard set


def test_recognition_metrics_single_and_multi_label():
    rng = np.random.default_rng(5)
    scores = rng.random((40, 7))
    labels = rng.integers(-1, 7, size=40)
    single = recognition_metrics(scores, labels)
    assert set(single) == {"top1", "top5", "mean_class_acc"}
    assert single["top5"] == pytest.approx(brute_topk(scores, labels, 5))
    targets = (rng.random((40, 7)) < 0.3).astype(np.uint8)
    assert recognition_metrics(scores, targets) == {"mAP": pytest.approx(brute_map(scores, targets))}
