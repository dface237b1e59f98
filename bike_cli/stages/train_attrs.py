"""Stage `train-attrs`: the Attributes branch trained on attribute sentences (Sec. 2.2, Eq. 8).

`--tune head` trains MLPs on frozen sentence embeddings (computed once, cached in the run folder), `--tune
full` fine-tunes the text encoder; the loop is train-video's. Outputs: docs/formats.md.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from bike_cli.config.profile import Profile, check_same_profile, get_profile
from bike_cli.config.ranges import check_ranges
from bike_cli.config.recipe import setting_text
from bike_cli.config.stages import TrainAttrsConfig
from bike_cli.data.class_names import (
    class_subset,
    described_classes,
    labels_by_names,
    read_class_names,
    restrict_labels,
)
from bike_cli.engine.run_folder import CheckpointHeader, RunFolder, TrainSummary, run_guard
from bike_cli.engine.runtime import metrics_over_processes
from bike_cli.engine.training_loop import PARAM_GROUPS, FitSettings, LoopSettings, TrainBranch, Trainer, run_training
from bike_cli.errors import InputError, as_user_error
from bike_cli.io.atomic import make_folder
from bike_cli.io.attributes_csv import AttributesTable, check_attributes_csv, read_attributes_csv
from bike_cli.io.checkpoints import ATTRS_KIND, read_sentence_cache, write_sentence_cache
from bike_cli.io.csv_meta import meta_path, read_csv_meta
from bike_cli.io.guard import PathGuard, file_or_none
from bike_cli.io.identity import check_same_model, differences, file_sha256, identity_of
from bike_cli.models.attributes import SENTENCE_BATCH, attribute_scores, video_rows
from bike_cli.models.attrs_branch import TUNES, AttributesBranch
from bike_cli.models.build import AttrsBranchSpec, build_attrs_branch
from bike_cli.models.clip import load_clip
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import PromptError, check_templates, encode_class_texts
from bike_cli.progress import Progress

log = logging.getLogger(__name__)


def _targets(table: AttributesTable, num_classes: int) -> torch.Tensor:
    """int64 [R] (-1 unknown) or float multi-hot [R, K]."""
    if not table.multilabel:
        return torch.tensor([labels[0] if labels else -1 for labels in table.labels], dtype=torch.int64)
    hot = torch.zeros(len(table.labels), num_classes)
    for row, labels in enumerate(table.labels):
        hot[row, list(labels)] = 1.0
    return hot


def _class_targets(table: AttributesTable, class_names: list[str], classes: str,
                   subset: np.ndarray | None) -> torch.Tensor:
    """`_targets` numbered by `class_names`: the labels of a file whose sidecar records the classes they
    number are mapped by name (`labels_by_names`); the labels of one without are taken as indices of them.
    With `subset` (the positions of the classes trained on: `class_subset`) renumbered by it, the rows of
    other classes unlabelled."""
    recorded = list(read_csv_meta(table.source).class_names)
    width = len(recorded) or len(class_names)
    for row, labels in enumerate(table.labels):  # the first label beyond the class list is named
        beyond = [i for i in labels if i >= width]
        if beyond:
            raise InputError(f"{table.source}: video {table.video_ids[row]!r} has label {beyond[0]}, beyond the "
                             f"{width} classes of {table.source if recorded else classes}")
    mapped = labels_by_names(_targets(table, width).numpy(), class_names, recorded, classes, table.source)
    return torch.from_numpy(mapped if subset is None else restrict_labels(mapped, subset))


@torch.no_grad()
def sentence_embeddings(clip_model, tokenizer, sentences: list[str], cache: Path, key: dict) -> torch.Tensor:
    """Frozen text embeddings [R, D] of the attribute sentences, reused from `cache` when `key` matches."""
    stored = read_sentence_cache(cache, key, len(sentences))
    if stored is not None:
        log.info("sentence embeddings reused from %s", cache)
        return stored
    device = clip_model.token_embedding.weight.device
    out = [clip_model.encode_text(tokenizer(sentences[i : i + SENTENCE_BATCH]).to(device)).float().cpu()
           for i in range(0, len(sentences), SENTENCE_BATCH)]
    embeddings = torch.cat(out)  # [R, D]
    write_sentence_cache(cache, key, embeddings)
    return embeddings


def _inputs(cfg: TrainAttrsConfig, table: AttributesTable, clip_model, tokenizer, spec, split: str) -> torch.Tensor:
    """Per row: sentence embeddings [R, D] (--tune head) or sentence tokens [R, L] (--tune full)."""
    if cfg.tune == "full":
        return tokenizer(table.sentences)
    key = {"model": spec.model_name, "pretrained": spec.pretrained, "sha256": spec.checkpoint_sha256 or "",
           "attributes": file_sha256(table.source), "split": split}
    return sentence_embeddings(clip_model, tokenizer, table.sentences, cfg.out / f"sentence_embeddings_{split}.pt", key)


def _check(cfg: TrainAttrsConfig) -> PathGuard:
    guard = run_guard(cfg.out, {"--attributes": cfg.attributes, "--val-attributes": cfg.val_attributes,
                                "--classes": cfg.classes, "--base-classes": cfg.base_classes,
                                "--class-texts": cfg.class_texts, "--pretrained": file_or_none(cfg.pretrained)})
    if cfg.attributes is None:
        raise InputError("--attributes is required (an attributes CSV from bike gen-attributes)")
    check_ranges(cfg)
    if cfg.tune not in TUNES:
        raise InputError(f"--tune must be one of {', '.join(TUNES)}, not {cfg.tune!r}")
    with as_user_error(PromptError):
        check_templates(cfg.templates)
    get_profile(cfg.compat)  # InputError for an unknown --compat
    return guard


def _class_names(cfg: TrainAttrsConfig) -> tuple[list[str], str]:
    """The classes in use and where they come from: `--classes`, else the names the attributes CSV's
    sidecar records (gen-attributes writes the names its labels number)."""
    if cfg.classes is not None:
        return read_class_names(cfg.classes), f"--classes {cfg.classes}"
    recorded = read_csv_meta(cfg.attributes).class_names
    if not recorded and cfg.base_classes is not None:  # the labels index the base class file itself
        return read_class_names(cfg.base_classes), f"--base-classes {cfg.base_classes}"
    if not recorded:
        raise InputError(f"{cfg.attributes} records no class names (a hand-made file, or one of a bike before "
                         "its sidecar recorded them): pass --classes FILE, the class names its labels number")
    return list(recorded), f"the class names {meta_path(cfg.attributes)} records"


def _recorded_model(cfg: TrainAttrsConfig) -> TrainAttrsConfig:
    """`--model`/`--pretrained` (and `--quick-gelu`) default to the CLIP that generated the attributes,
    which the attributes CSV's sidecar records (bike_cli.io.csv_meta, schema 2)."""
    for path in filter(None, (cfg.attributes, cfg.val_attributes)):
        check_attributes_csv(path)  # a file of another kind is named as such, not as one without a sidecar
    if cfg.model and cfg.pretrained:
        return cfg
    recorded = read_csv_meta(cfg.attributes).model
    if recorded is None:
        raise InputError(f"{cfg.attributes} does not record the model that generated it (a hand-made file, or one "
                         "of a bike before its sidecar recorded it): pass --model and --pretrained, the CLIP whose "
                         "text encoder reads the sentences")
    same = cfg.model is None or cfg.model == recorded["model_name"]
    return replace(cfg, model=cfg.model or recorded["model_name"],
                   pretrained=cfg.pretrained or (recorded["pretrained"] if same else None),
                   quick_gelu=recorded["quick_gelu"] if cfg.quick_gelu is None and same else cfg.quick_gelu)


def _check_recorded_model(cfg: TrainAttrsConfig, spec) -> None:
    """The attributes CSVs come from one CLIP (or --allow-model-mismatch); a text encoder other than it
    is allowed (the paper generates attributes with a larger CLIP than it trains with): a log line says so."""
    recorded = [(path, model) for path in filter(None, (cfg.attributes, cfg.val_attributes))
                if (model := read_csv_meta(path).model) is not None]
    for path, model in recorded[1:]:
        check_same_model(recorded[0][1], str(recorded[0][0]), model, str(path), cfg.allow_model_mismatch,
                         same_space=False)  # sentences are text: any text tower reads both
    if recorded and differences(identity_of(spec), identity_of(recorded[0][1])):
        log.info("the text encoder (%s, %s) is not the CLIP that generated %s (%s, %s): its sentences are read "
                 "as text", spec.model_name, spec.pretrained, recorded[0][0], recorded[0][1]["model_name"],
                 recorded[0][1]["pretrained"])


def run_train_attrs(cfg: TrainAttrsConfig, progress_factory=Progress) -> TrainSummary:
    """Train the Attributes branch; see the module docstring for the outputs."""
    guard = _check(cfg)
    cfg = _recorded_model(cfg)
    if not cfg.pretrained:
        raise InputError(f"{setting_text(cfg, 'model')} is not the model that generated {cfg.attributes}: give "
                         "--pretrained too")
    profile = get_profile(cfg.compat)
    return run_training(cfg, "train-attrs", guard, profile, partial(_train_attrs, cfg, profile, progress_factory))


def _train_attrs(cfg: TrainAttrsConfig, profile: Profile, progress_factory, settings: LoopSettings, accelerator,
                 run: RunFolder) -> TrainSummary:
    """The stage proper, while this launch holds the run folder's lock (`run_training` calls it)."""
    device = accelerator.device
    train_table = read_attributes_csv(cfg.attributes)
    val_table = read_attributes_csv(cfg.val_attributes) if cfg.val_attributes else None
    label_names, classes_source = _class_names(cfg)  # the names the labels are numbered by
    subset = class_subset(cfg.base_classes, label_names, classes_source)
    class_names = label_names if subset is None else [label_names[i] for i in subset]  # what it learns
    descriptions = described_classes(cfg.class_texts, class_names)
    for path in filter(None, (cfg.attributes, cfg.val_attributes)):
        check_same_profile(cfg.compat, read_csv_meta(path).compat, path)
    clip_model, spec = load_clip(cfg.model, cfg.pretrained, quick_gelu=cfg.quick_gelu, device=device)
    _check_recorded_model(cfg, spec)
    tokenizer = get_tokenizer(spec.model_name)
    with as_user_error(PromptError):  # a class name too long for the text context
        classes = encode_class_texts(clip_model, tokenizer, class_names, cfg.templates, "all",
                                     descriptions=descriptions).pooled.to(device)  # [K, D]
    make_folder(cfg.out)
    train_inputs = _inputs(cfg, train_table, clip_model, tokenizer, spec, "train")
    train_targets = _class_targets(train_table, label_names, classes_source, subset)
    rows = torch.nonzero(train_targets.any(1) if train_targets.ndim == 2 else train_targets >= 0).flatten()
    branch_spec = AttrsBranchSpec.of(spec, tune=cfg.tune, templates=cfg.templates,
                                     class_texts=descriptions and list(zip(class_names, descriptions)),
                                     **profile.branch_training(cfg.loss))
    with as_user_error(ValueError):  # --loss
        model = build_attrs_branch(branch_spec, clip_model).to(device)
    val = None
    if val_table is not None:
        val_inputs = _inputs(cfg, val_table, clip_model, tokenizer, spec, "val")
        val = (val_table, val_inputs, _class_targets(val_table, label_names, classes_source, subset))
    del clip_model  # class embeddings and sentence embeddings are computed; `text` is a copy

    def batch_inputs(batch) -> tuple:
        inputs, targets = batch
        return inputs.to(device), targets.to(device), classes

    def validate(unwrapped: AttributesBranch) -> dict:
        table, inputs, targets = val
        videos = list(dict.fromkeys(table.video_ids))  # unique, in order: every view of a video on one process
        mine_videos = set(videos[accelerator.process_index :: accelerator.num_processes])
        mine = np.array([r for r, vid in enumerate(table.video_ids) if vid in mine_videos], dtype=np.int64)
        unwrapped.eval()
        if not len(mine):
            return metrics_over_processes([], [])
        video_ids = [table.video_ids[r] for r in mine]
        _, scores = attribute_scores(lambda rows: unwrapped.class_probabilities(inputs[rows].to(device), classes),
                                     torch.from_numpy(mine), video_ids, chunk_rows=1024)  # [n, K]
        first = np.unique(video_rows(video_ids)[1], return_index=True)[1]  # [n] first row of each video
        return metrics_over_processes([scores], [targets.numpy()[mine[first]]])

    groups = model.param_groups(cfg.lr, cfg.clip_lr_ratio, cfg.weight_decay, PARAM_GROUPS[profile.optimizer_groups])
    branch = TrainBranch(model, groups, batch_inputs, validate=validate if val is not None else None,
                         checkpoint=CheckpointHeader(ATTRS_KIND, asdict(spec), class_names, branch_spec.to_dict()))
    return Trainer(settings, accelerator, run, progress_factory).fit(
        branch, FitSettings(cfg.lr, cfg.weight_decay, profile), TensorDataset(train_inputs[rows], train_targets[rows]))
