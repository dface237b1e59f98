"""The fast score-CSV writer: the same numbers as `%.7g` formatting, read back identically by pandas."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd

from bike_cli.io.score_csv import class_columns, read_score_csv, round_significant, write_score_csv


def awkward_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.uniform(-40, 40, 4000) * rng.choice([-1, 1], 4000)
    powers = 10.0 ** np.arange(-30, 30)
    near_powers = np.concatenate([np.nextafter(powers, 0), np.nextafter(powers, np.inf), powers])
    ties = np.array([1234567.5, 1234568.5, 0.5, 2.5, 0.12345675, 9.9999995e-3, 9.99999949e-3, 99999995.0])
    probabilities = rng.dirichlet(np.ones(400), 20).ravel()
    return np.concatenate([magnitudes, near_powers, ties, -ties, probabilities, [0.0, -0.0, 5e-324, 1.7e308]])


def test_rounding_gives_the_double_of_the_7_digit_decimal():
    values = awkward_values()
    expected = np.array([float(f"{v:.7g}") for v in values])
    np.testing.assert_array_equal(round_significant(values), expected)
    assert round_significant(values.reshape(-1, 2)).shape == (len(values) // 2, 2)


def write_with_percent_format(path, ids, labels, scores, names):
    """The writer as it was: csv header, then `%.7g` for every score."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerow(["video_id", "label", *class_columns(names)])
        writer = csv.writer(fh, lineterminator="\n")
        for vid, label, row in zip(ids, labels, scores):
            writer.writerow([vid, int(label), *(f"{v:.7g}" for v in row)])


def test_score_csv_reads_back_as_the_percent_format_writer_wrote(tmp_path):
    rng = np.random.default_rng(3)
    n, k = 50, 7
    ids = [f"vid {i}" for i in range(n - 3)] + ['with,comma', 'with "quote"', "ünïcode"]
    labels = rng.integers(-1, k, n)
    scores = np.concatenate([rng.dirichlet(np.ones(k), n - 10) ** 9, rng.normal(0, 30, (10, k))])
    names = [f"class {j}" for j in range(k)]
    new = write_score_csv(tmp_path / "new.csv", ids, labels, scores, names)
    write_with_percent_format(tmp_path / "old.csv", ids, labels, scores, names)
    options = dict(dtype={"video_id": str}, keep_default_na=False)
    pd.testing.assert_frame_equal(pd.read_csv(new, **options), pd.read_csv(tmp_path / "old.csv", **options))
    table = read_score_csv(new)
    assert table.video_ids == ids and table.class_names == names
    np.testing.assert_array_equal(table.labels, labels)
    np.testing.assert_array_equal(table.scores, np.array([[float(f"{v:.7g}") for v in row] for row in scores],
                                                          dtype=np.float32))
