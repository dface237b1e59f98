"""Evaluation protocols: seeded half-class splits, class-subset evaluation, K600 splits, the dispatcher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bike_cli.errors import InputError
from bike_cli.eval.metrics import recognition_metrics
from bike_cli.eval.protocols import (
    PROTOCOLS,
    evaluate_on_class_subset,
    headline_metrics,
    k600_splits,
    run_protocol,
    zero_shot_half,
    zero_shot_half_splits,
)
from bike_cli.io.score_csv import ScoreTable

LEXICONS = Path(__file__).resolve().parents[1] / "lexicons"


# ----------------------------------------------------------------------------- brute force


def brute_subset(scores, labels, classes) -> dict[str, float]:
    """Top-1/top-5/mean class accuracy/mAP of the subset's videos ranked among the subset, by loops."""
    classes = [int(c) for c in classes]
    ranked_rows, truths = [], []
    for row, label in zip(scores, labels):
        if label in classes:
            ranked_rows.append(sorted(classes, key=lambda c: (-float(row[c]), classes.index(c))))
            truths.append(int(label))
    top = {k: 100.0 * np.mean([t in r[:k] for r, t in zip(ranked_rows, truths)]) for k in (1, 5)}
    per_class = [np.mean([r[0] == t for r, t in zip(ranked_rows, truths) if t == c]) for c in classes if c in truths]
    rows = [i for i, label in enumerate(labels) if label in classes]
    aps = []
    for c in classes:
        order = sorted(rows, key=lambda i: (-float(scores[i, c]), i))  # earlier row first on ties
        hits = [labels[i] == c for i in order]
        if any(hits):
            aps.append(np.mean([sum(hits[:r + 1]) / (r + 1) for r, h in enumerate(hits) if h]))
    return {"top1": top[1], "top5": top[5], "mean_class_acc": 100.0 * np.mean(per_class), "mAP": 100.0 * np.mean(aps)}


def random_set(n=300, k=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, k)), rng.integers(-1, k, size=n)


# ----------------------------------------------------------------------------- half-class splits


def test_half_splits_are_seeded_halves():
    splits = zero_shot_half_splits(101)
    assert len(splits) == 10
    for classes in splits:
        assert len(classes) == 50 and len(np.unique(classes)) == 50  # UCF-101: 50 classes, as in the paper
        assert classes.min() >= 0 and classes.max() < 101
    assert len({tuple(c) for c in splits}) == 10  # each repetition draws anew
    again = zero_shot_half_splits(101, repeats=10, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(splits, again))
    other = zero_shot_half_splits(101, repeats=10, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(splits, other))


def test_half_splits_cover_the_classes_evenly():
    counts = np.zeros(20)
    for classes in zero_shot_half_splits(20, repeats=400, seed=3):
        counts[classes] += 1
    assert counts.min() > 150 and counts.max() < 250  # each class in about half of the draws (200)


@pytest.mark.parametrize("num_classes, repeats", [(1, 10), (10, 0)])
def test_half_splits_reject_bad_arguments(num_classes, repeats):
    with pytest.raises(InputError):
        zero_shot_half_splits(num_classes, repeats)


# ----------------------------------------------------------------------------- class subsets


@pytest.mark.parametrize("seed", [0, 1])
def test_subset_evaluation_matches_brute_force(seed):
    scores, labels = random_set(seed=seed)
    classes = np.random.default_rng(seed + 10).choice(12, 6, replace=False)
    got = evaluate_on_class_subset(scores, labels, classes)
    expected = brute_subset(scores, labels, classes)
    assert got == {k: pytest.approx(v) for k, v in expected.items()}


def test_subset_evaluation_reranks_among_the_subset():
    # video 0 (class 1) scores highest on class 0, which is not in the subset: a hit within {1, 2}
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.1, 0.6], [0.1, 0.2, 0.3]])
    labels = np.array([1, 1, 0])  # video 2's class is outside the subset: left out
    got = evaluate_on_class_subset(scores, labels, [1, 2])
    assert got["top1"] == pytest.approx(50.0)
    assert recognition_metrics(scores, labels)["top1"] == 0.0


def test_subset_evaluation_multi_label_keeps_videos_with_a_positive_in_it():
    scores = np.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.5, 0.4, 0.6]])
    targets = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], dtype=np.uint8)
    got = evaluate_on_class_subset(scores, targets, [1, 2])  # video 0 has no positive in {1, 2}
    # class 1 over videos 1, 2: AP 1; class 2: ranked 2 (+, 0.6), 1 (+, 0.3) -> AP 1
    assert got == {"mAP": pytest.approx(100.0)}
    assert evaluate_on_class_subset(scores, targets, [0, 2])["mAP"] == pytest.approx(100 * (1.0 + 1.0) / 2)


@pytest.mark.parametrize("classes", [[], [0, 0], [0, 12], [-1, 3]])
def test_subset_evaluation_rejects_bad_subsets(classes):
    scores, labels = random_set()
    with pytest.raises(InputError):
        evaluate_on_class_subset(scores, labels, np.array(classes, dtype=np.int64))


def test_zero_shot_half_is_the_mean_and_std_over_the_seeded_splits():
    scores, labels = random_set(seed=4)
    result = zero_shot_half(scores, labels, repeats=5, seed=9)
    splits = zero_shot_half_splits(12, repeats=5, seed=9)
    top1 = [brute_subset(scores, labels, c)["top1"] for c in splits]
    assert len(result["runs"]) == 5
    assert [r["class_indices"] for r in result["runs"]] == [c.tolist() for c in splits]
    assert [r["videos"] for r in result["runs"]] == [int(np.isin(labels, c).sum()) for c in splits]
    assert result["top1_mean"] == pytest.approx(np.mean(top1))
    assert result["top1_std"] == pytest.approx(np.std(top1))  # population std, as documented
    assert result["mean_class_acc_mean"] == pytest.approx(
        np.mean([brute_subset(scores, labels, c)["mean_class_acc"] for c in splits]))
    assert zero_shot_half(scores, labels, repeats=5, seed=10)["top1_mean"] != result["top1_mean"]


# ----------------------------------------------------------------------------- K600 splits


def read_names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def k600_table():
    """A score table over the union of the three split class lists (in a shuffled order)."""
    splits = [read_names(LEXICONS / f"k600_split{i}.txt") for i in (1, 2, 3)]
    names = sorted({n for split in splits for n in split})
    rng = np.random.default_rng(0)
    names = [names[i] for i in rng.permutation(len(names))]
    labels = rng.integers(0, len(names), size=900)
    scores = rng.random((900, len(names)))
    scores[np.arange(900), labels] += rng.random(900) * 0.6  # better than chance
    return ScoreTable([f"v{i}" for i in range(900)], labels, scores, names), splits


def test_k600_splits_evaluate_each_split_on_its_own_classes(k600_table):
    table, splits = k600_table
    result = k600_splits(table.scores, table.labels, table.class_names, splits)
    per_split = []
    for run, split in zip(result["splits"], splits):
        classes = [table.class_names.index(name) for name in split]
        expected = brute_subset(table.scores, table.labels, classes)
        assert run["classes"] == 160
        assert run["top1"] == pytest.approx(expected["top1"])
        per_split.append(expected["top1"])
    assert result["top1_mean"] == pytest.approx(np.mean(per_split))
    assert result["top1_std"] == pytest.approx(np.std(per_split))


def test_k600_split_names_match_across_case_and_underscores(k600_table):
    table, splits = k600_table
    styled = [[name.upper().replace(" ", "_") for name in split] for split in splits]
    plain = k600_splits(table.scores, table.labels, table.class_names, splits)
    assert k600_splits(table.scores, table.labels, table.class_names, styled)["top1_mean"] == plain["top1_mean"]


def test_k600_missing_class_is_an_error_naming_it(k600_table):
    table, splits = k600_table
    dropped = next(name for name in splits[1] if name not in splits[0])  # checked after split 1 passes
    keep = [i for i, name in enumerate(table.class_names) if name != dropped]
    with pytest.raises(InputError, match=r"split 2: 1 of its 160 classes .* scores\.csv") as err:
        k600_splits(table.scores[:, keep], table.labels, [table.class_names[i] for i in keep], splits,
                    where="scores.csv")
    assert repr(dropped) in str(err.value)


# ----------------------------------------------------------------------------- dispatcher


def test_run_protocol_full_single_label_adds_one_hot_map():
    scores, labels = random_set(seed=6)
    table = ScoreTable([f"v{i}" for i in range(300)], labels, scores, [str(k) for k in range(12)])
    result = run_protocol("full", table)
    expected = brute_subset(scores, labels, range(12))
    assert result["protocol"] == "full" and result["videos"] == int((labels >= 0).sum())
    assert headline_metrics(result) == {k: pytest.approx(v) for k, v in expected.items()}


def test_run_protocol_full_multi_label_is_map():
    rng = np.random.default_rng(2)
    targets = (rng.random((50, 5)) < 0.3).astype(np.uint8)
    scores = rng.random((50, 5))
    result = run_protocol("full", ScoreTable([f"v{i}" for i in range(50)], targets, scores, list("abcde")))
    assert headline_metrics(result) == {"mAP": pytest.approx(recognition_metrics(scores, targets)["mAP"])}


def test_run_protocol_dispatches_with_options(k600_table):
    table, splits = k600_table
    half = run_protocol("zero-shot-half", table, repeats=3, seed=5)
    assert half["protocol"] == "zero-shot-half" and len(half["runs"]) == 3
    assert half["top1_mean"] == zero_shot_half(table.scores, table.labels, 3, 5)["top1_mean"]
    k600 = run_protocol("k600-splits", table)  # the built-in split lexicons
    assert [s["split"] for s in k600["splits"]] == ["k600_split1", "k600_split2", "k600_split3"]
    direct = k600_splits(table.scores, table.labels, table.class_names, splits)
    assert k600["top1_mean"] == pytest.approx(direct["top1_mean"])
    assert set(PROTOCOLS) == {"full", "zero-shot-half", "k600-splits", "splits", "base-novel"}


@pytest.mark.parametrize("name, options, message", [
    ("half", {}, "not one of full, zero-shot-half, k600-splits"),
    ("full", {"seed": 1}, "takes no option 'seed'"),
    ("zero-shot-half", {"splits": ["a"]}, "takes no option 'splits'"),
])
def test_run_protocol_rejects_unknown_names_and_options(name, options, message):
    scores, labels = random_set()
    table = ScoreTable([f"v{i}" for i in range(300)], labels, scores, [str(k) for k in range(12)])
    with pytest.raises(InputError, match=message):
        run_protocol(name, table, **options)
