"""Recognition metrics over a whole test set: top-k accuracy, mean class accuracy, mAP. Scores [N, K] (any
monotone score); single-label targets int [N] (-1: left out), multi-label {0,1} [N, K]."""

from __future__ import annotations

import numpy as np


def _labelled(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = labels >= 0
    return scores[keep], labels[keep]


def labelled_count(labels: np.ndarray) -> int:
    """Videos with a label: label >= 0 (single-label) or at least one positive (multi-label)."""
    labels = np.asarray(labels)
    return int((labels.any(1) if labels.ndim == 2 else labels >= 0).sum())


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{"top1": %, "top5": %}: the share of videos whose label is among the k highest scores; ties are
    broken by class index (as `argmax`: a row of equal scores is a top-1 hit for class 0 only)."""
    scores, labels = _labelled(np.asarray(scores, dtype=np.float64), np.asarray(labels))
    # rank of the true class = classes scoring higher + tied classes with a lower index
    true = scores[np.arange(len(labels)), labels][:, None]  # [N, 1]
    lower = np.arange(scores.shape[1])[None, :] < labels[:, None]  # [N, K]
    rank = (scores > true).sum(1) + ((scores == true) & lower).sum(1)  # [N]
    out = {}
    for k in ks:
        k_eff = min(k, scores.shape[1])
        out[f"top{k}"] = 100.0 * float((rank < k_eff).mean()) if len(labels) else float("nan")
    return out


def _class_hits(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The share of each class's labelled videos predicted top-1 [K]; NaN for a class with none."""
    scores, labels = _labelled(np.asarray(scores), np.asarray(labels))
    pred = scores.argmax(1)
    return np.array([float((pred[labels == c] == c).mean()) if np.any(labels == c) else np.nan
                     for c in range(scores.shape[1])])


def per_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Top-1 accuracy (%) of each of the K classes [K]: NaN for a class with no labelled video."""
    return 100.0 * _class_hits(scores, labels)


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy per class, averaged over the classes present (the UCF/HMDB convention), in %."""
    hits = _class_hits(scores, labels)
    present = hits[~np.isnan(hits)]
    return 100.0 * float(np.mean(present)) if len(present) else float("nan")


def worst_and_best(values: np.ndarray, limit: int) -> tuple[np.ndarray, bool]:
    """Indices of the finite `values`, lowest first (ties by index); of more than 2 x `limit`, only the
    `limit` lowest and the `limit` highest. Returns (indices, whether some were left out)."""
    present = np.flatnonzero(np.isfinite(values))
    order = present[np.argsort(values[present], kind="stable")]
    if len(order) <= 2 * limit:
        return order, False
    return np.concatenate([order[:limit], order[-limit:]]), True


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class over the whole set: mean of the precision at each positive (NaN without one); ties
    broken by row order (a stable sort: the earlier row ranks first)."""
    order = np.argsort(-scores, kind="stable")
    hits = targets[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision_at = np.cumsum(hits) / (np.arange(len(hits)) + 1)
    return float(precision_at[hits].mean())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """mAP in % over the classes with at least one positive, computed on the full set at once."""
    aps = [average_precision(scores[:, k], targets[:, k]) for k in range(targets.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return 100.0 * float(np.mean(aps)) if aps else float("nan")


def recognition_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The standard set: top1/top5 and mean class accuracy (single-label) or mAP (multi-label)."""
    if labels.ndim == 2:
        return {"mAP": mean_average_precision(scores, labels)}
    return {**topk_accuracy(scores, labels), "mean_class_acc": mean_class_accuracy(scores, labels)}
