"""Stage `fuse`: score CSVs of several branches -> one fused score CSV and its metrics JSON.

Eq. 4 for M inputs: S = sum_i w_i S_i (w_i >= 0, summing to 1), on the scores as they are: no softmax (a
warning says when only some inputs look like probabilities). `--search` scores a simplex grid of weights on
validation files (top-1, mAP for multi-label); ties: `eval.fusion.best_point`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bike_cli.config.profile import FUSED, check_fusable, check_same_profile, get_profile
from bike_cli.config.ranges import check_choice, check_ranges
from bike_cli.config.stages import FuseConfig
from bike_cli.errors import InputError
from bike_cli.eval.fusion import (
    GridPoint,
    best_point,
    check_weights,
    default_weights,
    fuse_scores,
    grid_tied,
    looks_like_probabilities,
    read_aligned,
    search_criterion,
    search_weights,
    simplex_size,
    table_name,
)
from bike_cli.eval.protocols import PROTOCOLS, run_protocol
from bike_cli.io.csv_meta import meta_path, read_csv_meta, write_csv_meta
from bike_cli.io.guard import PathGuard, check_file_output
from bike_cli.io.metrics_json import FUSE_METRICS_KIND, write_metrics_json
from bike_cli.io.score_csv import ScoreTable, write_score_csv

log = logging.getLogger(__name__)


def _check(cfg: FuseConfig) -> None:
    """Every option, and the profile and score rule the inputs record, checked before anything is read."""
    check_ranges(cfg)
    if len(cfg.inputs) < 2:
        raise InputError(f"fuse needs two or more score CSVs, got {len(cfg.inputs)}")
    check_choice("--protocol", cfg.protocol, PROTOCOLS)
    check_file_output("--out", cfg.out)
    PathGuard({"an input": cfg.inputs, "--val": cfg.val},
              {"--out": cfg.out, "the metrics JSON of --out": cfg.metrics_json,
               "the .meta.json sidecar of --out": meta_path(cfg.out)})
    if cfg.search:
        if cfg.weights is not None:
            raise InputError("give either --weights or --search, not both")
        if len(cfg.val) != len(cfg.inputs):
            raise InputError(f"--search needs one --val file per input, in the same order: {len(cfg.inputs)} "
                             f"inputs, {len(cfg.val)} --val files (write --val A_val.csv --val B_val.csv)")
        simplex_size(len(cfg.inputs), cfg.grid_step)
    elif cfg.val:
        raise InputError("--val files are only read with --search")
    if cfg.weights is not None:
        check_weights(cfg.weights, len(cfg.inputs))
    get_profile(cfg.compat)  # InputError for an unknown --compat
    for path in [*cfg.inputs, *cfg.val]:
        meta = read_csv_meta(path)
        check_same_profile(cfg.compat, meta.compat, path)
        check_fusable(cfg.compat, meta.scores, path)


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
    best: GridPoint | None = None  # the chosen point of a search
    grid_tied: bool = False  # every point of the search tied: the default weights were kept


def run_fuse(cfg: FuseConfig) -> FuseSummary:
    """Read, check and align the inputs, choose the weights, write the fused CSV and its metrics JSON."""
    _check(cfg)
    tables = read_aligned(cfg.inputs)
    grid, criterion, best = None, None, None
    default = default_weights(len(tables), get_profile(cfg.compat).fuse_weight)
    if cfg.search:
        val_tables = read_aligned(cfg.val)
        grid, criterion = search_weights(val_tables, cfg.grid_step), search_criterion(val_tables[0])
        best = best_point(grid, default)
        weights = list(best.weights)
        log.info("search on %s: %s weights %s", ", ".join(map(str, cfg.val)),
                 "every grid point tied, kept the default" if grid_tied(grid) else "best",
                 ", ".join(f"{w:g}" for w in weights))
    else:
        weights = list(cfg.weights) if cfg.weights is not None else default
    _warn_mixed_scales(tables)
    input_metrics = [run_protocol(cfg.protocol, t, **cfg.protocol_options) for t in tables]
    first = tables[0]
    fused = ScoreTable(first.video_ids, first.labels, fuse_scores([t.scores for t in tables], weights),
                       first.class_names, cfg.out)
    fused_metrics = run_protocol(cfg.protocol, fused, **cfg.protocol_options)
    write_score_csv(cfg.out, fused.video_ids, fused.labels, fused.scores, fused.class_names)
    write_csv_meta(cfg.out, cfg.compat, FUSED)
    summary = FuseSummary(cfg.out, cfg.metrics_json, list(cfg.inputs), weights, input_metrics, fused_metrics,
                          criterion, grid, len(first.video_ids), len(first.class_names), best,
                          grid is not None and grid_tied(grid))
    write_metrics_json(summary.metrics_json, metrics_document(cfg, summary, tables), FUSE_METRICS_KIND)
    return summary


def _warn_mixed_scales(tables: Sequence[ScoreTable]) -> None:
    kinds = [looks_like_probabilities(t.scores) for t in tables]
    if any(kinds) and not all(kinds):
        probs = ", ".join(table_name(t, i) for i, (t, k) in enumerate(zip(tables, kinds)) if k)
        other = ", ".join(table_name(t, i) for i, (t, k) in enumerate(zip(tables, kinds)) if not k)
        log.warning("%s hold probabilities but %s do not (cosine similarities or logits?): fuse adds them "
                    "as they are, so the weights also have to make up for the different scales", probs, other)


def metrics_document(cfg: FuseConfig, summary: FuseSummary, tables: Sequence[ScoreTable]) -> dict:
    """The content of the metrics JSON (its writer turns NaN into null)."""
    search = None
    if summary.grid is not None:
        best, key = summary.best, summary.criterion
        search = {"val": [str(p) for p in cfg.val], "criterion": key, "grid_step": cfg.grid_step,
                  "tied": summary.grid_tied, "best": {"weights": list(best.weights), key: best.score},
                  "grid": [{"weights": list(p.weights), key: p.score} for p in summary.grid]}
    return {"compat": cfg.compat, "protocol": cfg.protocol,
            "protocol_options": {k: v if isinstance(v, (int, float, str)) else [str(x) for x in v]
                                 for k, v in cfg.protocol_options.items()},
            "videos": summary.videos, "classes": summary.classes, "weights": summary.weights,
            "inputs": [{"path": str(path), "weight": w, "metrics": m,
                        "scores_look_like_probabilities": looks_like_probabilities(t.scores)}
                       for path, w, t, m in zip(summary.inputs, summary.weights, tables, summary.input_metrics)],
            "fused": {"path": str(summary.out), "metrics": summary.fused_metrics}, "search": search}
