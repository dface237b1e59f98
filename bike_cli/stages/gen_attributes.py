"""Stage `gen-attributes`: the Video-Attributes Association of BIKE (Sec. 2.2) over a feature cache.

A video's attributes are the k lexicon phrases (each encoded as it is: the prompt only prefixes the
sentence) of highest cosine with its mean frame embedding (one row per view with `per_view`), joined into
the attribute sentence as the authors' code joins them. With `scores`: S_A, the sentence's cosine with
every prompted class name. The bounded-memory retrieval is `bike_cli.models.attributes`; tables: docs/formats.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
from torch import nn

from bike_cli.config.profile import COSINE
from bike_cli.config.ranges import check_ranges
from bike_cli.config.stages import GenAttributesConfig
from bike_cli.data.class_names import labels_by_names, read_class_names
from bike_cli.data.lexicons import load_lexicon
from bike_cli.engine.runtime import resolve_device
from bike_cli.errors import InputError, ModelLoadError
from bike_cli.eval.metrics import recognition_metrics
from bike_cli.io.attributes_csv import AttributesTable, write_attributes_csv
from bike_cli.io.csv_meta import meta_path, write_csv_meta
from bike_cli.io.feature_cache import CacheMeta, FeatureCache
from bike_cli.io.guard import PathGuard, check_file_output, file_or_none
from bike_cli.io.identity import check_same_model, differences, identity_of, identity_record
from bike_cli.io.score_csv import label_tuples, write_score_csv
from bike_cli.models.attributes import (
    Selection,
    TooFewPhrases,
    attribute_scores,
    encode_texts,
    own_class_phrases,
    phrase_embeddings,
    select_attributes,
    sentence_cosines,
)
from bike_cli.models.clip import ClipSpec, load_clip
from bike_cli.models.registry import configured_embed_dim, get_tokenizer, resolve_model_name
from bike_cli.models.text import Tokenizer, attribute_sentence, fill_template
from bike_cli.progress import Progress

log = logging.getLogger(__name__)


def _check(cfg: GenAttributesConfig) -> None:
    """Every option, checked before anything is loaded."""
    check_ranges(cfg)
    for option, template in (("--prompt", cfg.prompt), ("--sentence-template", cfg.sentence_template),
                             ("--class-prompt", cfg.class_prompt)):
        if template.count("{}") != 1:
            raise InputError(f"{option} {template!r} must contain exactly one '{{}}'")
    for option, path in (("--out", cfg.out), ("--scores", cfg.scores)):
        if path is not None and path.suffix != ".csv":
            raise InputError(f"{option} {path} should end in .csv")
    outputs = {"--out": cfg.out, "--scores": cfg.scores, "--phrase-cache": cfg.phrase_cache_path}
    for option, path in outputs.items():
        if path is not None:
            check_file_output(option, path)
    PathGuard({"--features": cfg.features, "--classes": cfg.classes, "--lexicon": file_or_none(cfg.lexicon),
               "--pretrained": file_or_none(cfg.pretrained)},
              {**outputs, **{f"the .meta.json sidecar of {o}": meta_path(p) for o, p in outputs.items()
                             if p is not None and p.suffix == ".csv"}})


@dataclass
class GenAttributesSummary:
    """What a run did."""

    out: Path
    scores_csv: Path | None
    phrase_cache: Path
    phrase_cache_reused: bool
    videos: int
    rows: int
    phrases: int
    top_k: int
    own_class_phrases: int  # classes whose name is a lexicon phrase (removed with drop_own_class)
    metrics: dict[str, float] = field(default_factory=dict)  # of S_A, where labels are known
    seconds: dict[str, float] = field(default_factory=dict)  # per step, and "total"


def run_gen_attributes(cfg: GenAttributesConfig, progress: Progress | None = None) -> GenAttributesSummary:
    """Write the attributes CSV (and the S_A score CSV when `cfg.scores` is set) for a feature cache."""
    started = time.perf_counter()
    _check(cfg)
    progress = progress or Progress()
    seconds: dict[str, float] = {}
    cache = FeatureCache(cfg.features, need_rows=True)
    meta = cache.meta
    phrases = load_lexicon(cfg.lexicon)
    if cfg.top_k > len(phrases):
        raise InputError(f"--top-k {cfg.top_k} is more than the {len(phrases)} phrases of lexicon {cfg.lexicon}")
    class_names = resolve_class_names(cfg, meta) if (cfg.drop_own_class or cfg.scores) else None
    if class_names is not None:
        cache.check_classes(len(class_names), f"--classes {cfg.classes}")
    model, spec = load_text_model(cfg, meta)
    device = next(model.parameters()).device
    tokenizer = get_tokenizer(spec.model_name)
    seconds["load"] = time.perf_counter() - started

    mark = time.perf_counter()
    phrase_emb, reused = phrase_embeddings(model, tokenizer, phrases, spec, cfg.prompt, cfg.phrase_cache_path,
                                           cfg.text_batch_size)  # [P, D]
    seconds["phrases"] = time.perf_counter() - mark

    mark = time.perf_counter()
    own = own_class_phrases(class_names, phrases) if cfg.drop_own_class else None
    with cache:
        try:
            selection = select_attributes(cache, phrase_emb.to(device), cfg.top_k, per_view=cfg.per_view,
                                          own_phrase=own, chunk_size=cfg.chunk_size,
                                          max_elements=cfg.max_elements, progress=progress)
        except TooFewPhrases as err:
            raise InputError(f"--top-k {cfg.top_k} is more than the phrases left for video {err.video_id!r} "
                             "once its own class is dropped") from None
    seconds["select"] = time.perf_counter() - mark

    mark = time.perf_counter()
    table = attributes_table(cache, selection, phrases, cfg.sentence_template, cfg.separator)
    write_attributes_csv(cfg.out, table)
    write_csv_meta(cfg.out, meta.compat, model=identity_record(spec),  # the cache's profile, the text encoder
                   class_names=meta.class_names or (read_class_names(cfg.classes) if cfg.classes else ()))
    seconds["write"] = time.perf_counter() - mark
    log.info("wrote the top-%d attributes of %d rows to %s", cfg.top_k, len(table), cfg.out)

    metrics: dict[str, float] = {}
    if cfg.scores is not None:
        mark = time.perf_counter()
        metrics = write_attribute_scores(cfg, cache, table, class_names, model, tokenizer, progress)
        seconds["scores"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    return GenAttributesSummary(
        out=cfg.out, scores_csv=cfg.scores, phrase_cache=cfg.phrase_cache_path, phrase_cache_reused=reused,
        videos=len(cache), rows=len(table), phrases=len(phrases), top_k=cfg.top_k,
        own_class_phrases=int((own >= 0).sum()) if own is not None else 0, metrics=metrics, seconds=seconds)


def resolve_class_names(cfg: GenAttributesConfig, meta: CacheMeta) -> list[str]:
    """The class names the cache's labels index: `--classes`, else the cache's own."""
    if cfg.classes is None:
        if not meta.class_names:
            raise InputError(f"{cfg.features} records no class names (extracted without --classes); "
                             "--drop-own-class and --scores need them: pass --classes FILE")
        return list(meta.class_names)
    names = read_class_names(cfg.classes)
    if meta.class_names and len(names) != len(meta.class_names):
        raise InputError(f"--classes {cfg.classes} has {len(names)} names but {cfg.features} was made with "
                         f"{len(meta.class_names)} classes: its labels index those")
    return names


def load_text_model(cfg: GenAttributesConfig, meta: CacheMeta) -> tuple[nn.Module, ClipSpec]:
    """The CLIP whose text encoder matches the cache's image embeddings (the cache's model by default)."""
    name = cfg.model or meta.model_name
    pretrained = cfg.pretrained or meta.pretrained
    from_cache = cfg.model is None and cfg.pretrained is None
    quick_gelu = cfg.quick_gelu
    if (quick_gelu is None and resolve_model_name(name) == meta.model_name
            and not open_clip.get_pretrained_cfg(meta.model_name, pretrained)):
        quick_gelu = meta.quick_gelu  # the cache's architecture with a file or 'none': the cache's activation
    dim = configured_embed_dim(name)
    if dim is not None and dim != meta.embed_dim:
        raise InputError(f"{name} embeds text in {dim} dimensions but {cfg.features} holds {meta.embed_dim}-d image "
                         f"embeddings made by {meta.model_name}: use the cache's model (leave --model out) or a "
                         f"cache made by {name}")
    try:
        model, spec = load_clip(name, pretrained, quick_gelu=quick_gelu, device=resolve_device(cfg.device))
    except ModelLoadError as e:
        if not from_cache:
            raise
        raise ModelLoadError(f"{e} (the model that made {cfg.features}; pass --model/--pretrained "
                             "to use another copy of it)") from e
    if spec.embed_dim != meta.embed_dim:
        raise InputError(f"{name} gives {spec.embed_dim}-d embeddings; {cfg.features} holds {meta.embed_dim}-d ones")
    differing = {key for key, _, _ in differences(identity_of(spec), identity_of(meta))}
    if differing & {"model_name", "weights", "quick_gelu"}:  # weights: the same file by sha256, wherever it lies
        log.warning("the text encoder (%s, %s) is not the model that made %s (%s, %s): attributes are only "
                    "meaningful when both towers come from one CLIP", spec.model_name, spec.pretrained,
                    cfg.features, meta.model_name, meta.pretrained)
    check_same_model(spec, "the text encoder", meta, str(cfg.features), cfg.allow_model_mismatch)
    return model, spec


def attributes_table(cache: FeatureCache, selection: Selection, phrases: Sequence[str], template: str,
                     separator: str) -> AttributesTable:
    """The rows of the attributes CSV for a selection."""
    attributes = [[phrases[i] for i in row] for row in selection.indices.tolist()]
    labels = label_tuples(cache.labels)
    return AttributesTable(video_ids=[cache.video_ids[r] for r in selection.video_rows],
                           views=selection.views.tolist() if selection.views is not None else None,
                           labels=[labels[r] for r in selection.video_rows], multilabel=cache.meta.multilabel,
                           attributes=attributes, scores=selection.scores,
                           sentences=[attribute_sentence(a, template, separator) for a in attributes],
                           top_k=selection.indices.shape[1])


def write_attribute_scores(cfg: GenAttributesConfig, cache: FeatureCache, table: AttributesTable,
                           class_names: list[str], model: nn.Module, tokenizer: Tokenizer,
                           progress: Progress) -> dict[str, float]:
    """Compute S_A per video (views averaged), write the score CSV and return its metrics."""
    prompts = [fill_template(cfg.class_prompt, name) for name in class_names]
    classes = encode_texts(model, tokenizer, prompts, cfg.text_batch_size)  # [K, D]
    video_ids, per_video = attribute_scores(  # the cache's videos, in its order; [N, K]
        lambda sentences: sentence_cosines(model, tokenizer, sentences, classes, cfg.text_batch_size),
        table.sentences, table.video_ids, cfg.chunk_size, progress)
    labels = _score_labels(cache, class_names, cfg.classes)
    write_score_csv(cfg.scores, video_ids, labels, per_video, class_names)
    write_csv_meta(cfg.scores, cache.meta.compat, COSINE)
    log.info("wrote S_A (%d classes) to %s", len(class_names), cfg.scores)
    known = labels.any(1) if labels.ndim == 2 else labels >= 0
    return recognition_metrics(per_video[known], labels[known]) if known.any() else {}


def _score_labels(cache: FeatureCache, class_names: list[str], classes: Path | None) -> np.ndarray:
    """The cache's labels numbered by `class_names` (mapped by name); multi-hot ones widened to K columns."""
    labels, num_classes = labels_by_names(cache.labels, class_names, list(cache.meta.class_names),
                                          f"--classes {classes}", cache.path), len(class_names)
    if labels.ndim == 2 and labels.shape[1] < num_classes:
        labels = np.pad(labels, ((0, 0), (0, num_classes - labels.shape[1])))
    return labels
