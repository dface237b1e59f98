"""Few-shot training sets: K videos per class, a seeded sample that is the same on every machine."""

from __future__ import annotations

import numpy as np

from bike_cli.errors import InputError


def few_shot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted row indices holding `shots` videos of every class (all of a class when it has fewer).

    labels: int [N] (single-label; -1 rows are never picked) or multi-hot [N, K] (a video counts for
    each of its classes). The draw for class k depends only on (seed, k) and the class's rows, so
    adding classes or reordering work leaves the other classes' picks unchanged.
    """
    if shots < 1:
        raise InputError(f"--shots must be at least 1, not {shots}")
    hot = labels.astype(bool) if labels.ndim == 2 else None
    num_classes = hot.shape[1] if hot is not None else int(labels.max()) + 1 if len(labels) else 0
    chosen: set[int] = set()
    for k in range(num_classes):
        rows = np.flatnonzero(hot[:, k] if hot is not None else labels == k)
        if len(rows) == 0:
            continue
        rng = np.random.default_rng([seed, k])
        chosen.update(rng.choice(rows, size=min(shots, len(rows)), replace=False).tolist())
    return np.array(sorted(chosen), dtype=np.int64)
