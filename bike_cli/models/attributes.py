"""The Video-Attributes Association of BIKE (Sec. 2.2) over a feature cache: lexicon phrases encoded once
(`phrase_embeddings`), the top-k per video or view (`select_attributes`), S_A (`attribute_scores`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bike_cli.data.lexicons import lexicon_sha256, normalise_name
from bike_cli.io.checkpoints import read_phrase_cache, write_phrase_cache
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import label_tuples
from bike_cli.models.clip import ClipSpec
from bike_cli.models.text import Tokenizer, fill_template
from bike_cli.progress import Progress

log = logging.getLogger(__name__)

SENTENCE_BATCH = 512  # attribute sentences per text-encoder call (train-attrs, eval)


def phrase_cache_key(spec: ClipSpec, prompt: str, phrases: Sequence[str]) -> dict:
    """What phrase embeddings depend on: the text encoder's weights, the prompt and the lexicon's content."""
    return {"model_name": spec.model_name,
            "weights": spec.checkpoint_sha256 or spec.pretrained,  # a file by its content, wherever it lies
            "quick_gelu": spec.quick_gelu, "prompt": prompt, "lexicon_sha256": lexicon_sha256(phrases),
            "num_phrases": len(phrases)}


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
    [n * V, D] (mean over T; row i * V + v is view v of video i). Numpy: torch's threaded reductions were
    10-20x slower here on a busy CPU."""
    n, views, frames, dim = features.shape
    if per_view:
        pooled = features.mean(axis=2, dtype=np.float32).reshape(n * views, dim)  # [n * V, D]
    else:
        pooled = features.reshape(n, views * frames, dim).mean(axis=1, dtype=np.float32)  # [n, D]
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)  # [rows, 1]
    return torch.from_numpy(pooled / np.maximum(norms, 1e-12))


class TooFewPhrases(ValueError):
    """Fewer than k phrases are left for a video once its own class phrases are excluded."""

    def __init__(self, k: int, video_id: str) -> None:
        super().__init__(f"k = {k} is more than the phrases left for video {video_id!r} once its own class "
                         "phrases are excluded")
        self.video_id = video_id


def select_attributes(cache: FeatureCache, phrase_emb: torch.Tensor, k: int, *, per_view: bool = False,
                      own_phrase: np.ndarray | None = None, chunk_size: int = 4096, max_elements: int = 1 << 25,
                      progress: Progress | None = None) -> Selection:
    """Top-k phrases of every video (or view) of `cache` against normalised `phrase_emb` [P, D]; `own_phrase` [K]
    removes each video's own class phrases (`TooFewPhrases` when that leaves fewer than k)."""
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
                raise TooFewPhrases(k, cache.video_ids[row])
            scores[start * views:stop * views] = values.cpu().numpy()
            indices[start * views:stop * views] = chosen.cpu().numpy()
            progress.advance(stop - start)
    finally:
        progress.stop()
    rows = np.arange(len(cache), dtype=np.int64)
    return Selection(scores=scores, indices=indices, video_rows=np.repeat(rows, views),
                     views=np.tile(np.arange(views, dtype=np.int64), len(cache)) if per_view else None)


def _own_pairs(labels: Sequence[tuple[int, ...]], own_phrase: np.ndarray, views: int,
               device: torch.device) -> torch.Tensor:
    """(row, phrase) pairs [m, 2] to exclude: each row's own class phrases (all views of a video)."""
    pairs = [(i * views + v, int(own_phrase[c])) for i, classes in enumerate(labels)
             for c in classes if own_phrase[c] >= 0 for v in range(views)]
    return torch.tensor(pairs, dtype=torch.long, device=device).reshape(-1, 2)


def video_rows(video_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The distinct video ids in order of first appearance, and for each row the number of its video in
    that list: int64 [R]."""
    number: dict[str, int] = {}
    codes = np.fromiter((number.setdefault(vid, len(number)) for vid in video_ids), dtype=np.int64,
                        count=len(video_ids))
    return list(number), codes


RowScorer = Callable[[Sequence[str] | torch.Tensor], torch.Tensor]  # rows [r] -> scores [r, K]


@torch.no_grad()
def attribute_scores(score_rows: RowScorer, rows: Sequence[str] | torch.Tensor, video_ids: Sequence[str],
                     chunk_rows: int = 4096, progress: Progress | None = None) -> tuple[list[str], np.ndarray]:
    """S_A: the distinct videos of `video_ids` (first appearance order) and float32 scores [N, K], the mean of
    `score_rows` over each video's rows [R] (attribute sentences, or a tensor of the branch's inputs), scored
    `chunk_rows` at a time and summed in float64: memory holds [N, K], never [R, K]."""
    if len(rows) != len(video_ids):
        raise ValueError(f"{len(rows)} attribute rows but {len(video_ids)} video ids")
    if not len(rows):
        raise ValueError("attribute_scores needs at least one row")
    progress = progress or Progress()
    ids, codes = video_rows(video_ids)
    counts = np.bincount(codes, minlength=len(ids))  # [N] rows per video
    last = len(codes) - 1 - np.unique(codes[::-1], return_index=True)[1]  # [N] last row of each video
    finished = np.bincount(last // chunk_rows, minlength=-(-len(codes) // chunk_rows))  # videos ending per chunk
    sums: torch.Tensor | None = None  # float64 [N, K]
    progress.start(len(ids), "S_A")
    try:
        for chunk, start in enumerate(range(0, len(codes), chunk_rows)):
            scores = _score_distinct(score_rows, rows[start:start + chunk_rows]).double().cpu()  # [r, K]
            if sums is None:
                sums = torch.zeros((len(ids), scores.shape[1]), dtype=torch.float64)
            sums.index_add_(0, torch.from_numpy(codes[start:start + chunk_rows]), scores)
            progress.advance(int(finished[chunk]))
    finally:
        progress.stop()
    return ids, (sums / torch.from_numpy(counts)[:, None]).float().numpy()


def _score_distinct(score_rows: RowScorer, rows: Sequence[str] | torch.Tensor) -> torch.Tensor:
    """`score_rows` of `rows` [r] -> [r, K]; sentences: each distinct one scored once (a video's views
    often share their sentence)."""
    if isinstance(rows, torch.Tensor):
        return score_rows(rows)
    distinct: dict[str, int] = {}
    inverse = [distinct.setdefault(sentence, len(distinct)) for sentence in rows]
    scores = score_rows(list(distinct))  # [u, K]
    return scores[torch.tensor(inverse, device=scores.device)]


def sentence_cosines(model: nn.Module, tokenizer: Tokenizer, sentences: Sequence[str], classes: torch.Tensor,
                     batch_size: int = 256) -> torch.Tensor:
    """The zero-training Attributes branch: the cosine [r, K] of each sentence through CLIP's frozen
    text encoder with each class embedding `classes` [K, D]."""
    return encode_texts(model, tokenizer, sentences, batch_size) @ F.normalize(classes.float(), dim=-1).T


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """L2-normalised float32 [N, D] `encode_text` embeddings of `texts`, on the model's device, filled into one
    tensor (batch results joined at the end pinned the heap: 1.1 GB for 50,000 phrases, measured)."""
    device = next(model.parameters()).device
    out: torch.Tensor | None = None
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start:start + batch_size])).to(device)  # [b, L]
        rows = F.normalize(model.encode_text(tokens).float(), dim=-1)  # [b, D]
        if out is None:
            out = torch.empty((len(texts), rows.shape[1]), dtype=torch.float32, device=device)
        out[start:start + rows.shape[0]] = rows
    if out is None:
        raise ValueError("encode_texts needs at least one text")
    return out


def topk_cosine(queries: torch.Tensor, keys: torch.Tensor, k: int, *, exclude: torch.Tensor | None = None,
                max_elements: int = 1 << 25) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of `queries` [n, D] @ `keys`.T [P, D]: values [n, k] (descending) and indices [n, k], keys in
    blocks of at most `max_elements` scores; `exclude` [m, 2]: (row, key index) pairs that may not be chosen."""
    n, num_keys = queries.shape[0], keys.shape[0]
    block = max(k, max_elements // max(n, 1))
    best_values = queries.new_empty((n, 0))
    best_indices = torch.empty((n, 0), dtype=torch.long, device=queries.device)
    for start in range(0, num_keys, block):
        scores = queries @ keys[start:start + block].T  # [n, b]
        if exclude is not None:
            inside = exclude[(exclude[:, 1] >= start) & (exclude[:, 1] < start + scores.shape[1])]
            scores[inside[:, 0], inside[:, 1] - start] = float("-inf")
        values, indices = scores.topk(min(k, scores.shape[1]), dim=1)  # [n, k']
        merged_values = torch.cat([best_values, values], dim=1)  # [n, k + k']
        merged_indices = torch.cat([best_indices, indices + start], dim=1)
        best_values, order = merged_values.topk(min(k, merged_values.shape[1]), dim=1)  # [n, k]
        best_indices = merged_indices.gather(1, order)
        del scores  # before the next block is allocated: one block of scores alive at a time
    return best_values, best_indices
