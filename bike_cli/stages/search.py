"""Stage `search`: text-to-video retrieval over a feature cache, with Video Concept Spotting.

Two stages (README, docs/formats.md): the fp16 search index picks `candidates` videos per query by the
`mean` rule; those are scored in float32, `mean` by the index's cosine, `vcs` by Eq. 5-6 on their frames
(read in one sorted pass). Queries are encoded and scored QUERY_CHUNK at a time, sheet pages drawn one at
a time: memory does not grow with the queries.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bike_cli.config.profile import get_profile
from bike_cli.config.ranges import check_choice, check_ranges
from bike_cli.config.stages import SearchConfig
from bike_cli.data.class_names import described_classes
from bike_cli.data.lexicons import read_lines
from bike_cli.data.sampling import clip_indices
from bike_cli.data.video_lists import nonblank
from bike_cli.engine.runtime import resolve_device
from bike_cli.errors import BikeError, InputError, as_user_error
from bike_cli.eval.metrics import average_precision
from bike_cli.io.csv_meta import meta_path
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.guard import PathGuard, file_or_none
from bike_cli.io.search_index import (
    CacheIdentity,
    Hit,
    index_path,
    read_search_index,
    write_hits_csv,
    write_search_index,
)
from bike_cli.models.attributes import topk_cosine
from bike_cli.models.clip import cache_clip
from bike_cli.models.heads import RULES, frame_cosines, vcs_scores, video_vectors
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import ClassTexts, PromptError, encode_class_texts, fill_template
from bike_cli.progress import Progress
from bike_cli.report.figures import SheetTile, check_figure_path, draw_sheet, hit_tile, sheet_pages

log = logging.getLogger(__name__)

SLAB = 4096  # videos per read while the index is built
QUERY_CHUNK = 256  # queries encoded and scored together: memory does not grow with --queries
RECALL_AT = (1, 5, 10)
_MEMO: dict[tuple, torch.Tensor] = {}  # index path + cache identity key -> float16 [N, D], this process


def _check(cfg: SearchConfig) -> list[str]:
    """The queries, after every option check (before anything is loaded)."""
    check_choice("--rule", cfg.rule, RULES)
    check_ranges(cfg)
    with as_user_error(PromptError):
        fill_template(cfg.template, "x")
    queries = list(cfg.queries)
    if cfg.queries_file is not None:
        queries += [text for _, text in nonblank(read_lines(Path(cfg.queries_file), "--queries file"))]
    for i, query in enumerate(queries, 1):
        if not query.strip():
            raise InputError(f"query {i} ({query!r}) is empty: give some words to search for")
    if cfg.class_texts is not None and not cfg.evaluate:
        raise InputError("--class-texts describes the classes that --eval searches for: add --eval")
    if not queries and not cfg.evaluate:
        raise InputError("no query given: pass one or more texts, --queries FILE, or --eval")
    if cfg.sheet is not None:
        check_figure_path(cfg.sheet, "--sheet", "hits.png")
    return [q.strip() for q in queries]


def _unfound_without_root(cfg: SearchConfig, hits: list[Hit]) -> set[str]:
    """--sheet without --root: the hits' relative video paths not found from here, said in one warning that
    names --root (they are drawn blank without a warning each)."""
    if cfg.root is not None:
        return set()
    paths = sorted({hit.path for hit in hits})
    unfound = {path for path in paths if not Path(path).is_absolute() and not Path(path).exists()}
    if unfound:
        log.warning("--sheet: %d of the %d videos of the hits are not found from %s (e.g. %r): extract-features "
                    "read the cache's video paths relative to its --root or its video list's folder; pass that "
                    "folder as --root (drawn blank)", len(unfound), len(paths), Path.cwd(), min(unfound))
    return unfound


@dataclass
class QueryHits:
    query: str  # as encoded, after the template
    hits: list[Hit]


@dataclass
class SearchResult:
    rule: str
    queries: list[QueryHits]
    index: dict  # path, built (bool), seconds
    seconds: dict
    evaluation: dict | None = None
    out: Path | None = None
    sheets: list[Path] = field(default_factory=list)  # the sheet, or its pages

    def to_json(self) -> dict:
        return {"rule": self.rule, "index": self.index, "seconds": self.seconds, "evaluation": self.evaluation,
                "out": str(self.out) if self.out else None, "sheets": [str(p) for p in self.sheets],
                "queries": [{"query": q.query, "hits": [vars(h) for h in q.hits]} for q in self.queries]}


def run_search(cfg: SearchConfig, progress: Progress | None = None) -> SearchResult:
    """Search the cache for every query (and with `evaluate`, its class names); write --out / --sheet."""
    queries = _check(cfg)
    started = time.perf_counter()
    cache = FeatureCache(cfg.features, need_rows=True)
    pages = sheet_pages(cfg.sheet, len(queries)) if cfg.sheet is not None and queries else []
    outputs = [cfg.out, meta_path(cfg.out) if cfg.out is not None else None, *(page for page, _ in pages)]
    guard = PathGuard({"--features": cache.path, "--class-texts": cfg.class_texts},
                      {"--out": outputs[:2], "--sheet": outputs[2:], "the search index": index_path(cache.path),
                       "--pretrained": file_or_none(cfg.pretrained)})
    with guard.holding(*outputs):
        encode = _text_encoder(cfg, cache)
        vectors, index = load_index(cache, progress or Progress())
        timings = {"model_and_index": time.perf_counter() - started}
        result = SearchResult(cfg.rule, [], index, timings)
        tic = time.perf_counter()
        counts = cache.num_frames() if queries else None
        for start in range(0, len(queries), QUERY_CHUNK):  # encoded and scored a chunk at a time
            prompts = [fill_template(cfg.template, q) for q in queries[start:start + QUERY_CHUNK]]
            found = search(cache, vectors, encode(prompts), cfg.rule, cfg.top, cfg.candidates)
            result.queries += [QueryHits(p, _hits(cache, cfg, p, f, counts)) for p, f in zip(prompts, found)]
        timings["query"] = time.perf_counter() - tic
        if cfg.evaluate:
            result.evaluation = evaluate_retrieval(cache, vectors, encode, cfg)
        if cfg.out is not None and result.queries:
            result.out = write_hits_csv(cfg.out, [h for q in result.queries for h in q.hits], cache.meta.compat,
                                        cfg.rule)
        unfound = _unfound_without_root(cfg, [h for q in result.queries for h in q.hits]) if pages else set()
        for page, shown in pages:  # one page's frames decoded at a time
            rows = [result.queries[i] for i in shown]
            result.sheets.append(draw_sheet([(q.query, [SheetTile(None, h.score, h.video_id, h.salient_frame)
                                                        if h.path in unfound else hit_tile(h) for h in q.hits])
                                             for q in rows], page))
    timings["total"] = time.perf_counter() - started
    return result


def _text_encoder(cfg: SearchConfig, cache: FeatureCache):
    """texts -> ClassTexts with the cache's CLIP (or --model/--pretrained, identity-checked)."""
    clip, spec = cache_clip(cfg.model, cfg.pretrained, cfg.quick_gelu, cache,
                            allow_model_mismatch=cfg.allow_model_mismatch, device=resolve_device(cfg.device))
    tokenizer = get_tokenizer(spec.model_name)

    def encode(texts: list[str], descriptions: list[list[str]] | None = None) -> ClassTexts:
        with as_user_error(PromptError):  # a query too long for the text context
            return encode_class_texts(clip, tokenizer, texts, ("{}",), "words", descriptions=descriptions)
    return encode


def load_index(cache: FeatureCache, progress: Progress) -> tuple[torch.Tensor, dict]:
    """The cache's index as float16 [N, D]: from memory, from its file when fresh, else built (and kept)."""
    path = index_path(cache.path)
    identity = CacheIdentity(cache)
    key = (str(path.resolve()), identity.key)
    tic, built = time.perf_counter(), False
    if key not in _MEMO:
        stored = read_search_index(path, identity)
        if stored is None:
            stored, built = build_index(cache, progress), True
            try:
                write_search_index(path, stored, identity)
            except (OSError, BikeError) as err:  # a read-only folder, a full disk: keep it in memory only
                log.warning("search index kept in memory only: cannot write %s (%s)", path, err)
        _MEMO.clear()  # one cache's index at a time
        _MEMO[key] = torch.from_numpy(np.ascontiguousarray(stored, dtype=np.float16))  # fp16: half the memory
    return _MEMO[key], {"path": str(path), "built": built, "seconds": time.perf_counter() - tic}


def build_index(cache: FeatureCache, progress: Progress) -> np.ndarray:
    """float16 [N, D] `video_vectors` of every video, read in slabs of SLAB rows."""
    out = np.empty((len(cache), cache.meta.embed_dim), dtype=np.float16)
    progress.start(len(cache), "search index")
    for start in range(0, len(cache), SLAB):
        stop = min(len(cache), start + SLAB)
        out[start:stop] = video_vectors(cache.embeddings(slice(start, stop))).numpy()
        progress.advance(stop - start)
    progress.stop()
    return out


@dataclass
class Found:
    rows: np.ndarray  # int64 [k] cache rows, best first
    scores: np.ndarray  # float32 [k]
    weights: np.ndarray  # float32 [k, V, T]: saliency (vcs) or frame cosines (mean), to pick the frame


def search(cache: FeatureCache, vectors: torch.Tensor, texts: ClassTexts, rule: str, top: int,
           candidates: int) -> list[Found]:
    """The `top` videos of each query: stage 1 (fp16) picks `candidates` from the index; they are scored
    in float32, by the index's cosine (mean) or by VCS on their frames, read in one sorted pass."""
    pooled = torch.nn.functional.normalize(texts.pooled.float().cpu(), dim=-1)  # [Q, D]
    first = topk_cosine(pooled.to(vectors.dtype), vectors, min(len(cache), candidates))[1].numpy()  # [Q, c]
    if rule == "mean":  # exact cosines of the candidates; only the top rows' frames are read
        exact = [(vectors[rows].float() @ pooled[q]).numpy() for q, rows in enumerate(first)]
        orders = [np.argsort(-e, kind="stable")[:top] for e in exact]
        picked = [(rows[o], e[o]) for rows, e, o in zip(first, exact, orders)]
    slab_rows = np.unique(first if rule == "vcs" else np.concatenate([rows for rows, _ in picked]))
    slab, at = cache.read_rows(slab_rows), {int(r): i for i, r in enumerate(slab_rows)}
    found = []
    for q, rows in enumerate(first):
        if rule == "vcs":
            frames = slab[[at[int(r)] for r in rows]]
            token_weights = None if texts.token_weights is None else texts.token_weights[q].cpu()
            scores, weights = vcs_scores(frames, texts.tokens[q].cpu(), texts.token_mask[q].cpu(), pooled[q],
                                         weights=token_weights)
            order = torch.argsort(scores, descending=True, stable=True)[:top].numpy()
            found.append(Found(rows[order], scores.numpy()[order], weights.numpy()[order]))
        else:
            rows, scores = picked[q]
            frames = slab[[at[int(r)] for r in rows]]
            found.append(Found(rows, scores.astype(np.float32), frame_cosines(frames, pooled[q]).numpy()))
    return found


def salient(weights: np.ndarray, clips: int) -> tuple[int, int]:
    """(t*, clip) of [V, T] weights: t* = argmax of the view mean; the clip whose crops peak there."""
    step = int(weights.mean(0).argmax())
    per_clip = weights.reshape(clips, -1, weights.shape[-1]).mean(1)  # [C, T]
    return step, int(per_clip[:, step].argmax())


def _hits(cache: FeatureCache, cfg: SearchConfig, query: str, found: Found, counts: np.ndarray) -> list[Hit]:
    """The hits of one query; `counts`: the frames of every video of the cache (`num_frames`, read once)."""
    hits = []
    for rank, (row, score, weights) in enumerate(zip(found.rows, found.scores, found.weights), 1):
        step, clip = salient(weights, cache.meta.clips)
        video_id, meta = cache.video_ids[int(row)], cache.meta
        frame = int(clip_indices(get_profile(meta.compat), meta.sampling_mode, int(counts[row]), meta.frames,
                                 meta.clips, meta.seed, video_id)[clip, step])  # the frames extract sampled
        path = str(Path(cfg.root) / video_id) if cfg.root is not None else video_id
        hits.append(Hit(query, rank, video_id, path, float(score), step, frame))
    return hits


def evaluate_retrieval(cache: FeatureCache, vectors: torch.Tensor, encode, cfg: SearchConfig) -> dict:
    """Per class AP and recall@1/5/10 of its videos with the class names as queries (or, with --class-texts,
    their descriptions, averaged as `encode_class_texts` averages them), both rules (in %)."""
    names = list(cache.meta.class_names)
    labels = np.asarray(cache.labels)
    if not names or (labels.ndim == 1 and (labels < 0).all()):
        raise InputError(f"--eval needs a labelled cache with class names; {cache.path} has none")
    relevant = labels.astype(bool) if labels.ndim == 2 else labels[:, None] == np.arange(len(names))  # [N, K]
    present = [k for k in range(len(names)) if relevant[:, k].any()]
    described = described_classes(cfg.class_texts, [names[k] for k in present])
    if described is not None:
        described = [[fill_template(cfg.template, d) for d in texts] for texts in described]
    prompts = [fill_template(cfg.template, names[k]) for k in present]
    texts = encode(prompts) if described is None else encode(prompts, described)
    pooled = torch.nn.functional.normalize(texts.pooled.float().cpu(), dim=-1).to(vectors.dtype)
    first = (vectors @ pooled.T).float().numpy()  # [N, K'] stage-1 scores
    out = {}
    for rule in RULES:
        ranked = search(cache, vectors, texts, rule, min(len(cache), cfg.candidates), cfg.candidates)
        per_class = {names[k]: _retrieval_metrics(f.rows, first[:, i], relevant[:, k])
                     for i, (k, f) in enumerate(zip(present, ranked))}
        mean = {m: float(np.mean([v[m] for v in per_class.values()])) for m in next(iter(per_class.values()))}
        out[rule] = {"mean": mean, "per_class": per_class}
    return {"classes": len(present), "videos": len(cache), "candidates": cfg.candidates, "rules": out}


def _retrieval_metrics(top_rows: np.ndarray, first: np.ndarray, relevant: np.ndarray) -> dict:
    """AP and recall@k (in %) of the ranking: `top_rows` first, then the other rows by stage-1 score `first`."""
    rest = np.setdiff1d(np.argsort(-first, kind="stable"), top_rows, assume_unique=True)  # order kept
    hits = relevant[np.concatenate([top_rows, rest])]
    metrics = {"AP": 100.0 * average_precision(-np.arange(len(hits), dtype=np.float64), hits)}
    for k in RECALL_AT:
        metrics[f"R@{k}"] = 100.0 * float(hits[:k].sum()) / float(hits.sum())
    return metrics
