"""Stage `fuse`: score CSVs of several branches -> one fused score CSV and its metrics JSON.

The paper's Eq. 4 generalised to M inputs: S = sum_i w_i S_i with w_i >= 0 and sum_i w_i = 1; for the
Video and Attributes branches, S = lambda S_V + (1 - lambda) S_A (lambda = 0.6 for ViT-B, 0.8 for ViT-L).

Scores are combined as they are, linearly: fuse applies no softmax. The paper (and the authors' code)
fuses softmax probabilities averaged over views, which is what the Video branch's evaluation writes;
`gen-attributes --scores` writes S_A as cosine similarities, a different scale. When some inputs look
like probabilities (rows in [0, 1] summing to 1) and others do not, a warning says so; the metrics JSON
records what each input looks like.

The weights are given (`--weights`, default equal) or searched (`--search`): every weight vector on a
simplex grid of step `grid_step` (for two inputs: lambda = 0, 0.05, ..., 1) is scored on validation
score files, by top-1 (mAP for multi-label files) over all their classes; the best one (the first in
grid order on ties, i.e. the smallest weight on the first input) is applied to the test files.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bike_cli.config.profile import BIKE, FUSED, check_fusable, check_profile, check_same_profile, get_profile
from bike_cli.errors import InputError
from bike_cli.eval.metrics import mean_average_precision, topk_accuracy
from bike_cli.eval.protocols import PROTOCOLS, run_protocol
from bike_cli.io.atomic import write_text
from bike_cli.io.csv_meta import meta_path, read_csv_meta, write_csv_meta
from bike_cli.io.guard import PathGuard
from bike_cli.io.outputs import check_file_output
from bike_cli.io.score_csv import ScoreTable, read_score_csv, write_score_csv

log = logging.getLogger(__name__)

MAX_GRID_POINTS = 5000  # weight vectors a --search may score
WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass
class FuseConfig:
    """Options of `bike fuse` (see its --help)."""

    inputs: list[Path]
    out: Path
    weights: list[float] | None = None
    search: bool = False
    val: list[Path] = field(default_factory=list)
    grid_step: float = 0.05
    protocol: str = "full"
    protocol_options: dict = field(default_factory=dict)
    compat: str = BIKE  # bike | authors: inputs must be of this profile; authors' default weights 0.7 / 0.3

    def __post_init__(self) -> None:
        self.inputs, self.val, self.out = [Path(p) for p in self.inputs], [Path(p) for p in self.val], Path(self.out)

    def validate(self) -> None:
        if len(self.inputs) < 2:
            raise InputError(f"fuse needs two or more score CSVs, got {len(self.inputs)}")
        if self.protocol not in PROTOCOLS:
            raise InputError(f"--protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        check_file_output("--out", self.out)
        PathGuard({"an input": self.inputs, "--val": self.val},
                  {"--out": self.out, "the metrics JSON of --out": self.metrics_json,
                   "the .meta.json sidecar of --out": meta_path(self.out)})
        if self.search:
            self._validate_search()
        elif self.val:
            raise InputError("--val files are only read with --search")
        if self.weights is not None:
            check_weights(self.weights, len(self.inputs))
        check_profile(self.compat)
        for path in [*self.inputs, *self.val]:
            meta = read_csv_meta(path)
            check_same_profile(self.compat, meta.compat, path)
            check_fusable(self.compat, meta.scores, path)

    def _validate_search(self) -> None:
        if self.weights is not None:
            raise InputError("give either --weights or --search, not both")
        if len(self.val) != len(self.inputs):
            raise InputError(f"--search needs one --val file per input, in the same order: {len(self.inputs)} "
                             f"inputs, {len(self.val)} --val files (write --val A_val.csv --val B_val.csv)")
        simplex_size(len(self.inputs), self.grid_step)

    @property
    def metrics_json(self) -> Path:
        return self.out.with_name(self.out.stem + ".metrics.json")


@dataclass
class GridPoint:
    """One weight vector of a search and its validation score."""

    weights: tuple[float, ...]
    score: float


@dataclass
class FuseSummary:
    """What `run_fuse` did, for the CLI's report (all of it is also in the metrics JSON)."""

    out: Path
    metrics_json: Path
    inputs: list[Path]
    weights: list[float]
    input_metrics: list[dict]  # run_protocol results, one per input
    fused_metrics: dict
    criterion: str | None = None  # the metric a search maximised
    grid: list[GridPoint] | None = None
    videos: int = 0
    classes: int = 0


# ----------------------------------------------------------------------------- weights


def default_weights(count: int, compat: str = BIKE) -> list[float]:
    """Equal weights; under the authors' profile, their 0.7 / 0.3 for two inputs (video, attributes)."""
    if get_profile(compat).fuse_weight is not None and count == 2:
        return [get_profile(compat).fuse_weight, 1.0 - get_profile(compat).fuse_weight]
    return [1.0 / count] * count


def parse_weights(text: str) -> list[float]:
    """`0.6,0.4` -> [0.6, 0.4]; InputError naming the bad item."""
    weights = []
    for item in text.split(","):
        try:
            weights.append(float(item))
        except ValueError:
            raise InputError(f"--weights {text!r}: {item.strip()!r} is not a number") from None
    return weights


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
    return np.array(list(_compositions(n, parts)), dtype=np.float64) / n


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


# ----------------------------------------------------------------------------- tables


def table_name(table: ScoreTable, i: int) -> str:
    return str(table.source) if table.source is not None else f"input {i + 1}"


def align_tables(tables: Sequence[ScoreTable]) -> list[ScoreTable]:
    """The tables with rows in the first one's order; InputError naming the files when their classes,
    video ids or labels differ."""
    first = tables[0]
    aligned = [first]
    for i, table in enumerate(tables[1:], start=1):
        _check_same_classes(first, table, table_name(first, 0), table_name(table, i))
        aligned.append(_reordered(first, table, table_name(first, 0), table_name(table, i)))
    return aligned


def _check_same_classes(a: ScoreTable, b: ScoreTable, name_a: str, name_b: str) -> None:
    if a.multilabel != b.multilabel:
        kinds = {True: "multi-label ('labels' column)", False: "single-label ('label' column)"}
        raise InputError(f"{name_a} is {kinds[a.multilabel]} but {name_b} is {kinds[b.multilabel]}")
    if len(a.class_names) != len(b.class_names):
        raise InputError(f"{name_a} has {len(a.class_names)} classes but {name_b} has {len(b.class_names)}")
    for k, (x, y) in enumerate(zip(a.class_names, b.class_names)):
        if x != y:
            raise InputError(f"{name_a} and {name_b} differ in their classes: class {k} is {x!r} in "
                             f"{name_a} but {y!r} in {name_b} (the same classes in the same order are needed)")


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


def _first(ids: Sequence[str], shown: int = 3) -> str:
    return ", ".join(repr(v) for v in ids[:shown]) + (", ..." if len(ids) > shown else "")


def _label_text(label: np.ndarray) -> str:
    label = np.asarray(label)
    if label.ndim == 0:
        return str(int(label))
    return ";".join(str(i) for i in np.flatnonzero(label)) or "-1"


def looks_like_probabilities(scores: np.ndarray, tolerance: float = 1e-3) -> bool:
    """Whether every row lies in [0, 1] and sums to 1 (within `tolerance`): softmax outputs."""
    scores = np.asarray(scores, dtype=np.float64)
    in_range = bool(((scores >= -tolerance) & (scores <= 1 + tolerance)).all())
    return in_range and bool(np.allclose(scores.sum(1), 1.0, atol=tolerance))


# ----------------------------------------------------------------------------- fusing


def fuse_scores(tables: Sequence[ScoreTable], weights: Sequence[float]) -> np.ndarray:
    """float64 [N, K]: sum_i weights[i] * scores_i of aligned tables."""
    fused = np.zeros(tables[0].scores.shape, dtype=np.float64)
    for table, weight in zip(tables, weights):
        fused += weight * table.scores.astype(np.float64)
    return fused


def search_criterion(table: ScoreTable) -> str:
    return "mAP" if table.multilabel else "top1"


def criterion_value(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 (single-label) or mAP (multi-label) over all classes, in %."""
    if labels.ndim == 2:
        return mean_average_precision(scores, labels)
    return topk_accuracy(scores, labels, ks=(1,))["top1"]


def search_weights(val_tables: Sequence[ScoreTable], step: float) -> list[GridPoint]:
    """Every weight vector of `simplex_grid` scored by `criterion_value` on aligned validation tables."""
    labels = val_tables[0].labels
    known = labels.any(1) if labels.ndim == 2 else labels >= 0
    if not known.any():
        names = ", ".join(table_name(t, i) for i, t in enumerate(val_tables))
        raise InputError(f"--search needs labelled validation videos; {names} have none")
    return [GridPoint(tuple(float(w) for w in weights), criterion_value(fuse_scores(val_tables, weights), labels))
            for weights in simplex_grid(len(val_tables), step)]


def best_point(grid: Sequence[GridPoint]) -> GridPoint:
    """The highest score; the first in grid order on ties (NaN never wins over a number)."""
    scores = np.array([p.score for p in grid], dtype=np.float64)
    return grid[int(np.nanargmax(scores))] if np.isfinite(scores).any() else grid[0]


def read_aligned(paths: Sequence[Path]) -> list[ScoreTable]:
    tables = [read_score_csv(p) for p in paths]
    return align_tables(tables)


def run_fuse(cfg: FuseConfig) -> FuseSummary:
    """Read, check and align the inputs, choose the weights, write the fused CSV and its metrics JSON."""
    cfg.validate()
    tables = read_aligned(cfg.inputs)
    grid, criterion = None, None
    if cfg.search:
        val_tables = read_aligned(cfg.val)
        grid, criterion = search_weights(val_tables, cfg.grid_step), search_criterion(val_tables[0])
        weights = list(best_point(grid).weights)
        log.info("search on %s: best weights %s", ", ".join(map(str, cfg.val)), ", ".join(f"{w:g}" for w in weights))
    else:
        weights = list(cfg.weights) if cfg.weights is not None else default_weights(len(tables), cfg.compat)
    _warn_mixed_scales(tables)
    input_metrics = [run_protocol(cfg.protocol, t, **cfg.protocol_options) for t in tables]
    first = tables[0]
    fused = ScoreTable(first.video_ids, first.labels, fuse_scores(tables, weights), first.class_names, cfg.out)
    fused_metrics = run_protocol(cfg.protocol, fused, **cfg.protocol_options)
    write_score_csv(cfg.out, fused.video_ids, fused.labels, fused.scores, fused.class_names)
    write_csv_meta(cfg.out, cfg.compat, FUSED)
    summary = FuseSummary(cfg.out, cfg.metrics_json, list(cfg.inputs), weights, input_metrics, fused_metrics,
                          criterion, grid,
                          len(first.video_ids), len(first.class_names))
    write_metrics_json(cfg, summary, tables)
    return summary


def _warn_mixed_scales(tables: Sequence[ScoreTable]) -> None:
    kinds = [looks_like_probabilities(t.scores) for t in tables]
    if any(kinds) and not all(kinds):
        probs = ", ".join(table_name(t, i) for i, (t, k) in enumerate(zip(tables, kinds)) if k)
        other = ", ".join(table_name(t, i) for i, (t, k) in enumerate(zip(tables, kinds)) if not k)
        log.warning("%s hold probabilities but %s do not (cosine similarities or logits?): fuse adds them "
                    "as they are, so the weights also have to make up for the different scales", probs, other)


# ----------------------------------------------------------------------------- metrics JSON


def metrics_document(cfg: FuseConfig, summary: FuseSummary, tables: Sequence[ScoreTable]) -> dict:
    """The content of the metrics JSON (NaN written as null)."""
    search = None
    if summary.grid is not None:
        best = best_point(summary.grid)
        key = summary.criterion
        search = {"val": [str(p) for p in cfg.val], "criterion": key, "grid_step": cfg.grid_step,
                  "best": {"weights": list(best.weights), key: best.score},
                  "grid": [{"weights": list(p.weights), key: p.score} for p in summary.grid]}
    document = {
        "kind": "bike-fuse-metrics",
        "compat": cfg.compat,
        "protocol": cfg.protocol,
        "protocol_options": {k: v if isinstance(v, (int, float, str)) else [str(x) for x in v]
                             for k, v in cfg.protocol_options.items()},
        "videos": summary.videos,
        "classes": summary.classes,
        "weights": summary.weights,
        "inputs": [{"path": str(path), "weight": w, "metrics": m,
                    "scores_look_like_probabilities": looks_like_probabilities(t.scores)}
                   for path, w, t, m in zip(summary.inputs, summary.weights, tables, summary.input_metrics)],
        "fused": {"path": str(summary.out), "metrics": summary.fused_metrics},
        "search": search,
    }
    return _json_safe(document)


def write_metrics_json(cfg: FuseConfig, summary: FuseSummary, tables: Sequence[ScoreTable]) -> Path:
    """Write `metrics_document` atomically to `summary.metrics_json`."""
    path = summary.metrics_json
    return write_text(path, json.dumps(metrics_document(cfg, summary, tables), indent=2) + "\n")


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
