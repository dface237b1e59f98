"""Linear fusion of aligned score tables, S = sum_i w_i S_i (the paper's Eq. 4 over M inputs; scores added as
they are, no softmax), and the search for its weights over a simplex grid by top-1 (mAP)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bike_cli.data.class_names import columns_by_names, labels_by_names
from bike_cli.errors import InputError
from bike_cli.eval.metrics import labelled_count, mean_average_precision, topk_accuracy
from bike_cli.io.score_csv import ScoreTable, read_score_csv

MAX_GRID_POINTS = 5000  # weight vectors a --search may score
WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass
class GridPoint:
    """One weight vector of a search and its validation score."""

    weights: tuple[float, ...]
    score: float


def table_name(table: ScoreTable, i: int) -> str:
    """The table's file, or `input i+1` for a table read from nowhere."""
    return str(table.source) if table.source is not None else f"input {i + 1}"


def read_aligned(paths: Sequence[Path]) -> list[ScoreTable]:
    """Read the score CSVs and align them (`align_tables`)."""
    return align_tables([read_score_csv(p) for p in paths])


def align_tables(tables: Sequence[ScoreTable]) -> list[ScoreTable]:
    """The tables with classes (mapped by name) and rows in the first one's order; InputError naming the
    files when their kind of labels, classes, video ids or labels differ."""
    first, name_a = tables[0], table_name(tables[0], 0)
    aligned = [first]
    kinds = {True: "multi-label ('labels' column)", False: "single-label ('label' column)"}
    for i, table in enumerate(tables[1:], start=1):
        name_b = table_name(table, i)
        if first.multilabel != table.multilabel:
            raise InputError(f"{name_a} is {kinds[first.multilabel]} but {name_b} is {kinds[table.multilabel]}")
        if len(first.class_names) != len(table.class_names):
            raise InputError(f"{name_a} has {len(first.class_names)} classes but {name_b} has "
                             f"{len(table.class_names)}")
        names, recorded = list(first.class_names), list(table.class_names)
        scores = columns_by_names(table.scores, names, recorded, name_a, name_b)  # in the first's class order
        labels = labels_by_names(table.labels, names, recorded, name_a, name_b)
        aligned.append(_reordered(first, ScoreTable(list(table.video_ids), labels, scores, names, table.source),
                                  name_a, name_b))
    return aligned


def _reordered(first: ScoreTable, table: ScoreTable, name_a: str, name_b: str) -> ScoreTable:
    position = {vid: i for i, vid in enumerate(table.video_ids)}
    missing = [vid for vid in first.video_ids if vid not in position]
    wanted = set(first.video_ids)
    extra = [vid for vid in table.video_ids if vid not in wanted]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} videos of {name_a} are not in {name_b} (first: {_first(missing)})")
        if extra:
            parts.append(f"{len(extra)} videos of {name_b} are not in {name_a} (first: {_first(extra)})")
        raise InputError("the score files hold different videos: " + "; ".join(parts))
    order = np.array([position[vid] for vid in first.video_ids], dtype=np.int64)
    labels = table.labels[order]
    differ = np.flatnonzero((labels != first.labels).reshape(len(order), -1).any(1))
    if differ.size:
        vid = first.video_ids[differ[0]]
        raise InputError(f"video {vid!r} has label {_label_text(first.labels[differ[0]])} in {name_a} but "
                         f"{_label_text(labels[differ[0]])} in {name_b}")
    return ScoreTable(list(first.video_ids), labels, table.scores[order], list(table.class_names), table.source)


def _first(ids: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in ids[:3]) + (", ..." if len(ids) > 3 else "")


def _label_text(label: np.ndarray) -> str:
    label = np.asarray(label)
    if label.ndim == 0:
        return str(int(label))
    return ";".join(str(i) for i in np.flatnonzero(label)) or "-1"


def default_weights(count: int, fuse_weight: float | None = None) -> list[float]:
    """Equal weights; with the profile's `fuse_weight` (the authors' 0.7), [w, 1 - w] for two inputs
    (video, attributes)."""
    if fuse_weight is not None and count == 2:
        return [fuse_weight, 1.0 - fuse_weight]
    return [1.0 / count] * count


def check_weights(weights: Sequence[float], inputs: int) -> None:
    """One finite, non-negative weight per input, summing to 1."""
    shown = ",".join(f"{w:g}" for w in weights)
    if len(weights) != inputs:
        raise InputError(f"--weights {shown}: {len(weights)} weights for {inputs} input files")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise InputError(f"--weights {shown}: weights must be finite and non-negative")
    if abs(sum(weights) - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise InputError(f"--weights {shown} sum to {sum(weights):g}, not 1")


def simplex_size(parts: int, step: float) -> int:
    """Grid points of `simplex_grid(parts, step)`; InputError for a bad step or a grid too large."""
    if not 0 < step <= 1 or abs(round(1 / step) * step - 1) > 1e-9:
        raise InputError(f"--grid-step {step:g} must divide 1 (e.g. 0.05, 0.1, 0.25)")
    size = math.comb(round(1 / step) + parts - 1, parts - 1)
    if size > MAX_GRID_POINTS:
        raise InputError(f"--grid-step {step:g} over {parts} inputs gives {size} weight vectors, more than "
                         f"{MAX_GRID_POINTS}: use a coarser --grid-step (e.g. 0.1 or 0.2)")
    return size


def simplex_grid(parts: int, step: float) -> np.ndarray:
    """float64 [G, parts]: every weight vector with entries in multiples of `step` summing to 1, in
    lexicographic order (for two parts: [0, 1], [0.05, 0.95], ..., [1, 0])."""
    simplex_size(parts, step)
    n = round(1 / step)
    bars = itertools.combinations(range(n + parts - 1), parts - 1)  # stars and bars, in lexicographic order
    return np.array([np.diff((-1, *b, n + parts - 1)) - 1 for b in bars], dtype=np.float64) / n


def looks_like_probabilities(scores: np.ndarray, tolerance: float = 1e-3) -> bool:
    """Whether every row lies in [0, 1] and sums to 1 (within `tolerance`): softmax outputs."""
    scores = np.asarray(scores, dtype=np.float64)
    in_range = bool(((scores >= -tolerance) & (scores <= 1 + tolerance)).all())
    return in_range and bool(np.allclose(scores.sum(1), 1.0, atol=tolerance))


def fuse_scores(scores: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Eq. 4, float64 [N, K]: sum_i weights[i] * scores[i] of aligned score arrays [N, K]."""
    fused = np.zeros(scores[0].shape, dtype=np.float64)
    for branch, weight in zip(scores, weights):
        fused += weight * np.asarray(branch, dtype=np.float64)
    return fused


def search_criterion(table: ScoreTable) -> str:
    """The metric a search maximises: mAP for a multi-label table, else top1."""
    return "mAP" if table.multilabel else "top1"


def criterion_value(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 (single-label) or mAP (multi-label) over all classes, in %."""
    if labels.ndim == 2:
        return mean_average_precision(scores, labels)
    return topk_accuracy(scores, labels, ks=(1,))["top1"]


def weight_grid(scores: Sequence[np.ndarray], labels: np.ndarray, step: float) -> list[GridPoint]:
    """Each weight vector of `simplex_grid` with its fusion of aligned scores [N, K] by `criterion_value`."""
    return [GridPoint(tuple(float(w) for w in weights), criterion_value(fuse_scores(scores, weights), labels))
            for weights in simplex_grid(len(scores), step)]


def search_weights(val_tables: Sequence[ScoreTable], step: float) -> list[GridPoint]:
    """`weight_grid` of aligned validation tables, which must hold labelled videos."""
    labels = val_tables[0].labels
    if not labelled_count(labels):
        names = ", ".join(table_name(t, i) for i, t in enumerate(val_tables))
        raise InputError(f"--search needs labelled validation videos; {names} have none")
    return weight_grid([t.scores for t in val_tables], labels, step)


def fusion_curve(video: np.ndarray, attrs: np.ndarray, labels: np.ndarray,
                 step: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The search's grid over the Video and Attributes branches as a curve: lambda (the video weight) and
    the criterion of lambda S_V + (1 - lambda) S_A."""
    grid = weight_grid([video, attrs], labels, step)
    return np.array([p.weights[0] for p in grid]), np.array([p.score for p in grid])


TIE_TOLERANCE = 1e-9  # %-points: scores this close are one score (mAP sums in another order)


def _tied_best(grid: Sequence[GridPoint]) -> np.ndarray:
    """Whether each point has the best score (NaN never wins over a number; all NaN: every point)."""
    scores = np.array([p.score for p in grid], dtype=np.float64)
    if not np.isfinite(scores).any():
        return np.ones(len(grid), dtype=bool)
    return np.isfinite(scores) & (scores >= np.nanmax(scores) - TIE_TOLERANCE)


def grid_tied(grid: Sequence[GridPoint]) -> bool:
    """Whether every point of the grid has the best score (the validation files cannot choose)."""
    return bool(_tied_best(grid).all())


def best_point(grid: Sequence[GridPoint], default: Sequence[float]) -> GridPoint:
    """The highest score; on a tie the tied point nearest `default` (the first in grid order between
    equally near ones); when every point ties, `default` itself with the score they share."""
    tied = _tied_best(grid)
    if tied.all():
        return GridPoint(tuple(float(w) for w in default), grid[0].score)
    candidates = [p for p, t in zip(grid, tied) if t]
    distance = [float(np.linalg.norm(np.subtract(p.weights, default))) for p in candidates]
    nearest = min(distance)
    return next(p for p, d in zip(candidates, distance) if d <= nearest + WEIGHT_SUM_TOLERANCE)
