"""The Video-Attributes Association of BIKE (Sec. 2.2) over a feature cache: phrases, selection, S_A.

Phrase embeddings: every lexicon phrase through CLIP's text encoder (with a prompt, "{}" by
default), L2-normalised, kept in a phrase-embedding file (`bike_cli.io.text_embedding_caches`) and reused
while the model, prompt and lexicon are the same. Selection: the frame embeddings of each video
mean-pooled (over frames and views, or over frames only with `per_view`) and L2-normalised; the k
phrases of highest cosine are its attributes, read `chunk_size` rows at a time and searched in
blocks of at most `max_elements` entries. S_A: the cosine of each encoded attribute sentence with
each encoded class prompt, averaged over a video's views.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bike_cli.data.lexicons import lexicon_sha256, normalise_name
from bike_cli.errors import InputError
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import label_tuples
from bike_cli.io.text_embedding_caches import read_phrase_cache, write_phrase_cache
from bike_cli.models.clip_spec import ClipSpec
from bike_cli.models.retrieval import encode_texts, topk_cosine
from bike_cli.models.text import Tokenizer, fill_template
from bike_cli.progress import Progress

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- phrase embeddings


def phrase_cache_key(spec: ClipSpec, prompt: str, phrases: Sequence[str]) -> dict:
    """What phrase embeddings depend on: the text encoder's weights, the prompt and the lexicon's content."""
    return {
        "model_name": spec.model_name,
        "weights": spec.checkpoint_sha256 or spec.pretrained,  # a file by its content, wherever it lies
        "quick_gelu": spec.quick_gelu,
        "prompt": prompt,
        "lexicon_sha256": lexicon_sha256(phrases),
        "num_phrases": len(phrases),
    }


def phrase_embeddings(model: nn.Module, tokenizer: Tokenizer, phrases: Sequence[str], spec: ClipSpec, prompt: str,
                      path: Path, batch_size: int = 256) -> tuple[torch.Tensor, bool]:
    """float32 [P, D] normalised phrase embeddings (CPU), from `path` when its key matches, else encoded
    and saved there. Returns the embeddings and whether the file was reused."""
    key = phrase_cache_key(spec, prompt, phrases)
    stored = read_phrase_cache(path)
    if stored is not None and stored.get("key") == key:
        log.info("reusing the phrase embeddings in %s", path)
        return stored["embeddings"].float(), True
    if stored is not None:
        log.info("%s was made for another model, prompt or lexicon: encoding the phrases again", path)
    log.info("encoding %d phrases with %s's text encoder", len(phrases), spec.model_name)
    emb = encode_texts(model, tokenizer, [fill_template(prompt, p) for p in phrases], batch_size).cpu()
    write_phrase_cache(path, key, phrases, emb)
    return emb, False


# ----------------------------------------------------------------------------- selection


@dataclass
class Selection:
    """The top-k phrases of every row."""

    scores: np.ndarray  # float32 [R, k], descending per row
    indices: np.ndarray  # int64 [R, k] phrase indices
    video_rows: np.ndarray  # int64 [R] cache row of each row
    views: np.ndarray | None  # int64 [R] view of each row (per-view), else None


def own_class_phrases(class_names: Sequence[str], phrases: Sequence[str]) -> np.ndarray:
    """int64 [K]: per class, the index of the phrase equal to its name (normalised), -1 where none is."""
    where = {normalise_name(p): i for i, p in enumerate(phrases)}
    own = np.array([where.get(normalise_name(name), -1) for name in class_names], dtype=np.int64)
    matched = int((own >= 0).sum())
    log.info("--drop-own-class: %d of %d class names are phrases of the lexicon", matched, len(own))
    if not matched:
        log.warning("--drop-own-class removes nothing: no class name is a phrase of the lexicon")
    return own


def video_embeddings(features: np.ndarray, per_view: bool) -> torch.Tensor:
    """float16 frame embeddings [n, V, T, D] -> L2-normalised float32 [n, D] (mean over T and V) or
    [n * V, D] (mean over T; row i * V + v is view v of video i).

    Pooled in numpy: on a busy CPU, torch's threaded reductions were 10-20x slower here.
    """
    n, views, frames, dim = features.shape
    if per_view:
        pooled = features.mean(axis=2, dtype=np.float32).reshape(n * views, dim)  # [n * V, D]
    else:
        pooled = features.reshape(n, views * frames, dim).mean(axis=1, dtype=np.float32)  # [n, D]
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)  # [rows, 1]
    return torch.from_numpy(pooled / np.maximum(norms, 1e-12))


def select_attributes(cache: FeatureCache, phrase_emb: torch.Tensor, k: int, *, per_view: bool = False,
                      own_phrase: np.ndarray | None = None, chunk_size: int = 4096, max_elements: int = 1 << 25,
                      progress: Progress | None = None) -> Selection:
    """Top-k phrases of every video (or video view) of `cache`, against normalised `phrase_emb` [P, D].

    `own_phrase` [K] (from `own_class_phrases`) removes each video's own class phrase(s).
    """
    progress = progress or Progress()
    meta = cache.meta
    views = meta.num_views if per_view else 1
    read_per_video = meta.num_views * meta.frames * meta.embed_dim  # feature elements read per video
    step = max(1, min(chunk_size // views, max_elements // read_per_video))  # videos per chunk
    labels = label_tuples(cache.labels) if own_phrase is not None else None
    # filled in place: small per-chunk results kept between large freed blocks fragment the heap
    scores = np.empty((len(cache) * views, k), dtype=np.float32)  # [R, k]
    indices = np.empty((len(cache) * views, k), dtype=np.int64)  # [R, k]
    progress.start(len(cache), "attributes")
    try:
        for start in range(0, len(cache), step):
            stop = min(len(cache), start + step)
            queries = video_embeddings(cache.embeddings(slice(start, stop)), per_view).to(phrase_emb.device)
            exclude = None if labels is None else _own_pairs(labels[start:stop], own_phrase, views, queries.device)
            values, chosen = topk_cosine(queries, phrase_emb, k, exclude=exclude, max_elements=max_elements)
            if torch.isinf(values).any():
                row = start + int(torch.isinf(values).any(1).nonzero()[0]) // views
                raise InputError(f"--top-k {k} is more than the phrases left for video {cache.video_ids[row]!r} "
                                 "once its own class is dropped")
            scores[start * views:stop * views] = values.cpu().numpy()
            indices[start * views:stop * views] = chosen.cpu().numpy()
            progress.advance(stop - start)
    finally:
        progress.stop()
    rows = np.arange(len(cache), dtype=np.int64)
    return Selection(
        scores=scores, indices=indices, video_rows=np.repeat(rows, views),
        views=np.tile(np.arange(views, dtype=np.int64), len(cache)) if per_view else None,
    )


def _own_pairs(labels: Sequence[tuple[int, ...]], own_phrase: np.ndarray, views: int,
               device: torch.device) -> torch.Tensor:
    """(row, phrase) pairs [m, 2] to exclude: each row's own class phrases (all views of a video)."""
    pairs = [(i * views + v, int(own_phrase[c])) for i, classes in enumerate(labels)
             for c in classes if own_phrase[c] >= 0 for v in range(views)]
    return torch.tensor(pairs, dtype=torch.long, device=device).reshape(-1, 2)



# ----------------------------------------------------------------------------- S_A


def attribute_scores(model: nn.Module, tokenizer: Tokenizer, sentences: Sequence[str], class_prompts: Sequence[str],
                     views: int = 1, batch_size: int = 256, chunk_rows: int = 4096,
                     progress: Progress | None = None) -> torch.Tensor:
    """S_A float32 [R / views, K] (CPU): cosine of each encoded sentence with each encoded class prompt,
    averaged over each video's `views` consecutive rows. Rows are taken `chunk_rows` at a time and
    each distinct sentence of a chunk is encoded once."""
    progress = progress or Progress()
    classes = encode_texts(model, tokenizer, class_prompts, batch_size)  # [K, D]
    videos = len(sentences) // views
    out = torch.empty((videos, len(class_prompts)))
    step = max(1, chunk_rows // views)  # videos per chunk
    progress.start(videos, "S_A")
    try:
        for start in range(0, videos, step):
            rows = sentences[start * views:(start + step) * views]
            distinct: dict[str, int] = {}
            inverse = [distinct.setdefault(sentence, len(distinct)) for sentence in rows]
            sims = encode_texts(model, tokenizer, list(distinct), batch_size) @ classes.T  # [u, K]
            picked = sims[torch.tensor(inverse, device=sims.device)]  # [n * views, K]
            out[start:start + len(rows) // views] = picked.reshape(-1, views, picked.shape[1]).mean(1).cpu()
            progress.advance(len(rows) // views)
    finally:
        progress.stop()
    return out
