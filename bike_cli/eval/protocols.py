"""Evaluation protocols of the paper's tables over a score table [N, K] (docs/reproducing.md tells each).

Metrics in %, NaN with nothing to measure; population std (`ddof=0`). A result is a flat dict: float
entries are metrics, int entries counts, lists the per-run details.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bike_cli.data.class_names import check_disjoint, match_class_names, read_class_names
from bike_cli.data.lexicons import load_lexicon
from bike_cli.data.video_lists import SplitList, match_videos, read_split_lists
from bike_cli.errors import InputError
from bike_cli.eval.metrics import labelled_count, mean_average_precision, recognition_metrics
from bike_cli.io.score_csv import ScoreTable

log = logging.getLogger(__name__)

PROTOCOLS = ("full", "zero-shot-half", "k600-splits", "splits", "base-novel")
K600_SPLITS = ("k600_split1", "k600_split2", "k600_split3")  # built-in lexicon names


def full_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`recognition_metrics`, plus mAP over one-hot targets for single-label sets (unknown rows left out)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    metrics = recognition_metrics(scores, labels)
    if labels.ndim == 1:
        known = labels >= 0
        onehot = np.zeros((int(known.sum()), scores.shape[1]), dtype=np.uint8)  # [n, K]
        onehot[np.arange(len(onehot)), labels[known]] = 1
        metrics["mAP"] = mean_average_precision(scores[known], onehot)
    return metrics


def zero_shot_half_splits(num_classes: int, repeats: int = 10, seed: int = 0) -> list[np.ndarray]:
    """`repeats` sorted int64 arrays of `num_classes // 2` distinct class indices, drawn at random
    (numpy's default_rng(seed): the same seed gives the same splits)."""
    if num_classes < 2:
        raise InputError(f"the half-classes protocol needs at least 2 classes, not {num_classes}")
    if repeats < 1:
        raise InputError(f"the half-classes protocol needs at least 1 repetition, not {repeats}")
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(num_classes, num_classes // 2, replace=False)).astype(np.int64)
            for _ in range(repeats)]


def evaluate_on_class_subset(scores: np.ndarray, labels: np.ndarray, classes: Sequence[int] | np.ndarray
                             ) -> dict[str, float]:
    """`full_metrics` of the videos of `classes`, ranked among `classes` only.

    scores [N, K]; labels int [N] (-1 unknown) or multi-hot [N, K]; classes: distinct indices in [0, K).
    Single-label: the videos whose label is in the subset. Multi-label: the videos with a positive in it.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    classes = _check_subset(classes, scores.shape[1])
    sub_scores = scores[:, classes]  # [N, k]
    if labels.ndim == 2:
        targets = labels[:, classes]  # [N, k]
        keep = targets.any(1)
        return full_metrics(sub_scores[keep], targets[keep])
    keep = np.isin(labels, classes)
    remap = np.full(scores.shape[1], -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    return full_metrics(sub_scores[keep], remap[labels[keep]])


def _check_subset(classes: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.ndim != 1 or classes.size == 0 or not np.issubdtype(classes.dtype, np.integer):
        raise InputError(f"a class subset must be a non-empty list of class indices, got {classes!r}")
    outside = classes[(classes < 0) | (classes >= num_classes)]
    if outside.size:
        raise InputError(f"class index {int(outside[0])} of the subset is out of range for {num_classes} classes")
    if len(np.unique(classes)) != len(classes):
        raise InputError("the class subset names a class twice")
    return classes.astype(np.int64)


def subset_run(scores: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> dict:
    """One evaluation on a class subset: its size, its video count and its metrics."""
    metrics, labels = evaluate_on_class_subset(scores, labels, classes), np.asarray(labels)  # classes checked
    kept = labels[:, classes].any(1) if labels.ndim == 2 else np.isin(labels, classes)  # [N]
    return {"classes": len(classes), "videos": int(kept.sum()), **metrics}


def mean_std(runs: Sequence[dict]) -> dict[str, float]:
    """`<metric>_mean` and `<metric>_std` (population std) of the float entries shared by all runs."""
    out: dict[str, float] = {}
    for key in (k for k, v in runs[0].items() if isinstance(v, float)):
        values = np.array([run[key] for run in runs], dtype=np.float64)
        out[f"{key}_mean"], out[f"{key}_std"] = float(values.mean()), float(values.std())
    return out


def zero_shot_half(scores: np.ndarray, labels: np.ndarray, repeats: int = 10, seed: int = 0) -> dict:
    """The half-classes protocol: mean/std of the metrics over `repeats` random halves of the classes,
    and each run (`runs`: its class indices, video count and metrics)."""
    splits = zero_shot_half_splits(np.asarray(scores).shape[1], repeats, seed)
    runs = [{"run": i, **subset_run(scores, labels, classes), "class_indices": classes.tolist()}
            for i, classes in enumerate(splits)]
    return {"repeats": repeats, "seed": seed, **mean_std(runs), "runs": runs}


def k600_splits(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                split_class_lists: Sequence[Sequence[str]], split_names: Sequence[str] | None = None,
                where: str = "the score table") -> dict:
    """The Kinetics-600 protocol: each split (class names, matched by `match_class_names`) evaluated on its
    own classes; mean/std over the splits and each split (`splits`)."""
    if not split_class_lists:
        raise InputError("the k600-splits protocol needs at least one split")
    names = list(split_names) if split_names is not None else [str(i + 1) for i in range(len(split_class_lists))]
    runs = []
    for name, split in zip(names, split_class_lists):
        classes = match_class_names(split, class_names, f"split {name}", where)
        runs.append({"split": name, **subset_run(scores, labels, classes)})
    return {**mean_std(runs), "splits": runs}


def base_novel(base: ScoreTable, novel: ScoreTable, base_names: Sequence[str], novel_names: Sequence[str],
               base_source: object = "--base-classes", novel_source: object = "--novel-classes") -> dict:
    """The base-to-novel protocol: the base classes' videos of `base` among the base columns only, the novel
    classes' of `novel` (may be `base`) among the novel ones, and HM = 2ab/(a+b) of the top-1s (0 if both 0)."""
    check_disjoint(base_names, novel_names, base_source, novel_source)
    runs = []
    for split, table, names, source in (("base", base, base_names, base_source),
                                        ("novel", novel, novel_names, novel_source)):
        where = str(table.source) if table.source is not None else "the score table"
        classes = match_class_names(names, table.class_names, f"--{split}-classes {source}", where)
        runs.append({"split": split, **subset_run(table.scores, table.labels, classes)})
    a, b = runs[0]["top1"], runs[1]["top1"]
    return {"base_top1": a, "novel_top1": b, "HM": 2.0 * a * b / (a + b) if a + b else 0.0, "splits": runs}


def official_splits(scores: np.ndarray, labels: np.ndarray, video_ids: Sequence[str], splits: Sequence[SplitList],
                where: str = "the score table") -> dict:
    """The test-splits protocol: `full_metrics` of each split's videos over all classes (`splits`: each
    split's name, video count and metrics), then mean/std over the splits (population std)."""
    if not splits:
        raise InputError("the splits protocol needs at least one split list")
    scores, labels = np.asarray(scores), np.asarray(labels)
    runs = []
    for split in splits:
        rows = match_videos(split.video_ids, video_ids, f"split list {split.name}", where)
        runs.append({"split": split.name, "videos": len(rows), **full_metrics(scores[rows], labels[rows])})
    return {**mean_std(runs), "splits": runs}


def run_protocol(name: str, table: ScoreTable, **options) -> dict:
    """Evaluate `table` under protocol `name` (one of PROTOCOLS) with its options (`allowed` below: as the
    protocol functions take them, class files and split lists read here); the result starts with `protocol`
    and the labelled `videos`."""
    allowed = {"full": (), "zero-shot-half": ("repeats", "seed"), "k600-splits": ("splits",),
               "base-novel": ("base_classes", "novel_classes", "novel_table"), "splits": ("split_lists",)}
    if name not in allowed:
        raise InputError(f"protocol {name!r} is not one of {', '.join(PROTOCOLS)}")
    unknown = sorted(set(options) - set(allowed[name]))
    if unknown:
        raise InputError(f"protocol {name!r} takes no option {unknown[0]!r} "
                         f"(it takes: {', '.join(allowed[name]) or 'none'})")
    head = {"protocol": name, "videos": labelled_count(table.labels)}
    if name == "full":
        return {**head, **full_metrics(table.scores, table.labels)}
    if name == "zero-shot-half":
        return {**head, **zero_shot_half(table.scores, table.labels, options.get("repeats", 10),
                                         options.get("seed", 0))}
    if name == "base-novel":  # class files are read here
        subsets = []
        for key in ("base_classes", "novel_classes"):
            given = options.get(key)
            if not given:
                raise InputError(f"the base-novel protocol needs --{key.replace('_', '-')} (a class file)")
            subsets.append((read_class_names(given), given) if isinstance(given, (str, Path)) else (list(given), key))
        (base_names, base_source), (novel_names, novel_source) = subsets
        novel = options.get("novel_table") or table
        result = base_novel(table, novel, base_names, novel_names, base_source, novel_source)
        return {**head, **({"novel_videos": labelled_count(novel.labels)} if novel is not table else {}), **result}
    where = str(table.source) if table.source is not None else "the score table"
    if name == "splits":
        lists = list(options.get("split_lists") or [])
        if not all(isinstance(item, SplitList) for item in lists):
            lists = read_split_lists(lists)
        return {**head, **official_splits(table.scores, table.labels, table.video_ids, lists, where)}
    sources = [str(s) for s in (options.get("splits") or K600_SPLITS)]
    lists = [load_lexicon(s) for s in sources]
    return {**head, **k600_splits(table.scores, table.labels, table.class_names, lists, sources, where)}


def headline_metrics(result: dict) -> dict[str, float]:
    """The float entries of a protocol result: the metrics, without counts and per-run details."""
    return {k: v for k, v in result.items() if isinstance(v, float)}
