"""Stage `search`: VCS scores as Eq. 5-6, the two-stage search, salient frames, the index file, hits CSV."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hits_reader import read_hits_csv

from bike_cli.config.stages import SearchConfig
from bike_cli.data.sampling import segment_indices
from bike_cli.errors import CacheMismatchError, InputError
from bike_cli.io.feature_cache import (
    Batch,
    CacheMeta,
    FeatureCache,
    PartWriter,
    finish,
    merge,
    parts_dir_for,
    scan_parts,
    write_meta_file,
)
from bike_cli.io.search_index import CacheIdentity, Hit, index_path, read_search_index, write_hits_csv
from bike_cli.models.heads import DEFAULT_TAU, vcs_scores, video_vectors
from bike_cli.models.text import ClassTexts
from bike_cli.stages import search as stage
from bike_cli.stages.search import run_search

DIM = 64  # bike-tiny's embedding width


def make_cache(path: Path, emb: np.ndarray, labels=None, clips: int = 1, crops: int = 1, num_frames: int = 40,
               class_names=("a", "b", "c"), model: str = "bike-tiny") -> Path:
    """A cache [N, V, T, D] written through the cache's own part-and-merge writer."""
    n, views, frames, dim = emb.shape
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    meta = CacheMeta(model_name=model, pretrained="none", checkpoint_sha256=None, quick_gelu=False, image_size=64,
                     embed_dim=dim, frames=frames, clips=clips, crops=crops, sampling_mode="test", seed=0,
                     decoder="decord", multilabel=False, num_classes=len(class_names), class_names=tuple(class_names))
    parts = parts_dir_for(path)
    write_meta_file(parts, meta)
    PartWriter(parts, 0).write(Batch(list_index=np.arange(n), video_ids=[f"vid{i:04d}" for i in range(n)],
                                     embeddings=emb.astype(np.float16), labels=labels,
                                     num_frames=np.full(n, num_frames) + np.arange(n) % 7, decoders=["decord"] * n))
    merge(path, scan_parts(parts), meta)
    finish(parts)
    return path


def random_texts(q: int, m: int = 4, seed: int = 1) -> ClassTexts:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(m)[None] < torch.randint(1, m + 1, (q, 1), generator=g)
    return ClassTexts(torch.nn.functional.normalize(torch.randn(q, DIM, generator=g), dim=-1),
                      torch.randn(q, m, DIM, generator=g) * mask[..., None], mask)


def eq_5_6(video: np.ndarray, tokens: np.ndarray, pooled: np.ndarray, tau: float = DEFAULT_TAU):
    """Eq. 5-6 written out for one video [V, T, D] and one query (its N real tokens [N, D]), in float64."""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    scores, saliencies = [], []
    for frames in unit(video.astype(np.float64)):  # views: [T, D]
        saliency = np.zeros(len(frames))
        for t_n in unit(tokens.astype(np.float64)):
            logits = frames @ t_n / tau
            saliency += np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        saliency /= len(tokens)  # S_t = (1/N) sum_n softmax_t(v_t . t_n / tau)
        enhanced = (saliency[:, None] * frames).sum(0)  # e_v = sum_t S_t v_t
        scores.append(enhanced @ pooled / np.linalg.norm(enhanced) / np.linalg.norm(pooled))
        saliencies.append(saliency)
    return float(np.mean(scores)), np.array(saliencies)


def test_vcs_scores_equal_eq_5_6():
    rng = np.random.default_rng(0)
    videos = rng.standard_normal((5, 3, 8, DIM)).astype(np.float32)
    texts = random_texts(2)
    for q in range(2):
        scores, saliency = vcs_scores(videos, texts.tokens[q], texts.token_mask[q], texts.pooled[q])
        tokens = texts.tokens[q][texts.token_mask[q]].numpy()
        for i, video in enumerate(videos):
            want, want_saliency = eq_5_6(video, tokens, texts.pooled[q].numpy())
            assert scores[i].item() == pytest.approx(want, abs=2e-6)
            np.testing.assert_allclose(saliency[i].numpy(), want_saliency, atol=2e-6)


def test_mean_index_vector_gives_the_views_mean_cosine():
    videos = np.random.default_rng(1).standard_normal((4, 6, 8, DIM)).astype(np.float32)
    query = torch.nn.functional.normalize(torch.randn(DIM), dim=-1)
    per_view = torch.nn.functional.normalize(torch.from_numpy(videos).mean(2), dim=-1) @ query  # [n, V]
    torch.testing.assert_close(video_vectors(videos) @ query, per_view.mean(1))


@pytest.fixture
def big_cache(tmp_path):
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((30, 1, 1, DIM))  # videos in 30 clusters: real neighbours for queries
    emb = centres[np.arange(300) % 30] + 0.7 * rng.standard_normal((300, 1, 8, DIM))
    return FeatureCache(make_cache(tmp_path / "big.h5", emb.astype(np.float32)))


def exhaustive(cache: FeatureCache, texts: ClassTexts, q: int, top: int) -> np.ndarray:
    scores, _ = vcs_scores(cache.embeddings(slice(None)), texts.tokens[q], texts.token_mask[q], texts.pooled[q])
    return np.argsort(-scores.numpy(), kind="stable")[:top]


def test_two_stage_returns_the_exhaustive_top_k(big_cache):
    vectors, _ = stage.load_index(big_cache, stage.Progress())
    emb = big_cache.embeddings(slice(None)).astype(np.float32)
    texts = random_texts(3, seed=3)
    texts.pooled = torch.nn.functional.normalize(torch.from_numpy(emb[[5, 17, 29], 0].mean(1)), dim=-1)
    texts.tokens = torch.from_numpy(emb[[5, 17, 29], 0, :4]) * texts.token_mask[..., None]
    every = stage.search(big_cache, vectors, texts, "vcs", 5, len(big_cache))
    some = stage.search(big_cache, vectors, texts, "vcs", 5, 40)
    first = (vectors.float() @ texts.pooled.T).numpy()  # [N, Q] stage 1 (in float32: a margin for fp16)
    for q in range(3):
        best = exhaustive(big_cache, texts, q, 5)
        assert every[q].rows.tolist() == best.tolist()
        assert set(best) <= set(np.argsort(-first[:, q])[:30])  # the best are well among the 40 candidates
        assert some[q].rows.tolist() == best.tolist()
        np.testing.assert_allclose(some[q].scores, every[q].scores, rtol=1e-6)


def test_mean_rule_scores_are_the_exact_cosines_in_float32(big_cache):
    vectors, _ = stage.load_index(big_cache, stage.Progress())
    texts = random_texts(2, seed=8)
    found = stage.search(big_cache, vectors, texts, "mean", 5, len(big_cache))
    exact = video_vectors(big_cache.embeddings(slice(None))).half().float() @ texts.pooled.T  # [N, Q]
    for q in range(2):
        best = torch.argsort(exact[:, q], descending=True, stable=True)[:5]
        assert found[q].rows.tolist() == best.tolist()
        np.testing.assert_allclose(found[q].scores, exact[best, q].numpy(), rtol=1e-5)


def test_salient_frame_is_the_argmax_of_s_and_its_frame_number_follows_the_sampling_rule(tmp_path):
    emb = np.random.default_rng(4).standard_normal((12, 2, 8, DIM)).astype(np.float32)
    cache = FeatureCache(make_cache(tmp_path / "two_clips.h5", emb, clips=2, num_frames=50))
    vectors, _ = stage.load_index(cache, stage.Progress())
    texts = random_texts(1, seed=5)
    found = stage.search(cache, vectors, texts, "vcs", 4, 12)[0]
    counts = cache.num_frames()
    hits = stage._hits(cache, SearchConfig(features=cache.path), "q", found, counts)
    for hit, row in zip(hits, found.rows):
        _, saliency = vcs_scores(emb[row:row + 1], texts.tokens[0], texts.token_mask[0], texts.pooled[0])
        s = saliency[0].numpy()  # [V, T]
        assert hit.salient_step == int(s.mean(0).argmax())
        clip = int(s[:, hit.salient_step].argmax())  # one crop per clip: the view is the clip
        assert hit.salient_frame == segment_indices(int(counts[row]), 8, mode="test", clips=2)[clip, hit.salient_step]


def test_index_is_reused_when_fresh_and_rebuilt_when_the_cache_changes(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    path = make_cache(tmp_path / "c.h5", rng.standard_normal((20, 1, 4, DIM)).astype(np.float32))
    first, info = stage.load_index(FeatureCache(path), stage.Progress())
    assert info["built"] and index_path(path).is_file()
    assert stage.load_index(FeatureCache(path), stage.Progress())[1]["built"] is False  # held in memory
    stage._MEMO.clear()
    monkeypatch.setattr(stage, "build_index", lambda *a: pytest.fail("a fresh index was rebuilt"))
    again, info = stage.load_index(FeatureCache(path), stage.Progress())
    assert info["built"] is False and torch.equal(first, again)
    monkeypatch.undo()
    os.remove(path)
    make_cache(path, rng.standard_normal((25, 1, 4, DIM)).astype(np.float32))  # the cache changes
    changed, info = stage.load_index(FeatureCache(path), stage.Progress())
    assert info["built"] and changed.shape[0] == 25
    cache = FeatureCache(path)
    torch.testing.assert_close(changed.float(), video_vectors(cache.embeddings(slice(None))), atol=1e-3, rtol=0)
    assert read_search_index(index_path(path), CacheIdentity(cache)) is not None  # fresh
    make_cache(tmp_path / "other.h5", rng.standard_normal((25, 1, 4, DIM)).astype(np.float32))
    assert read_search_index(index_path(path), CacheIdentity(FeatureCache(tmp_path / "other.h5"))) is None  # stale


def test_hits_csv_and_sidecar_round_trip(tmp_path):
    hits = [Hit("a dog, running", 1, "v/1.mp4", "root/v/1.mp4", 0.123456789, 3, 17),
            Hit('say "hi"', 1, "v,2", "v,2", -0.5, 0, 0)]
    out = write_hits_csv(tmp_path / "hits.csv", hits, "bike", "vcs")
    table = read_hits_csv(out)
    assert table.rule == "vcs" and table.compat == "bike"
    assert table.hits[0] == Hit("a dog, running", 1, "v/1.mp4", "root/v/1.mp4", 0.1234568, 3, 17)
    assert table.hits[1] == hits[1]
    (tmp_path / "bad.csv").write_text("video_id,label\n")
    with pytest.raises(InputError, match="expected the header"):
        read_hits_csv(tmp_path / "bad.csv")


@pytest.mark.parametrize("scores", ["bike-softmax", "cosine", "authors-test"])
def test_a_hits_csv_whose_sidecar_records_a_score_rule_is_refused(tmp_path, scores):
    """A score CSV's sidecar beside a hits-shaped CSV: its rule says what the numbers are, and they
    are not search scores."""
    from bike_cli.io.csv_meta import write_csv_meta

    out = write_hits_csv(tmp_path / "hits.csv", [Hit("q", 1, "v/1.mp4", "v/1.mp4", 0.5, 0, 0)], "bike", "mean")
    assert read_hits_csv(out).rule == "mean"
    write_csv_meta(out, "bike", scores)
    with pytest.raises(InputError, match=f"sidecar's scores '{scores}' are not a search rule"):
        read_hits_csv(out)


def test_a_model_other_than_the_caches_is_refused(tmp_path):
    path = make_cache(tmp_path / "c.h5", np.zeros((3, 1, 4, DIM), dtype=np.float32) + 1)
    with pytest.raises(CacheMismatchError, match="bike-tiny-text.*bike-tiny"):
        run_search(SearchConfig(features=path, queries=["a dog"], model="bike-tiny-text"))


@pytest.mark.parametrize("options, message", [
    ({"queries": ["a dog", "  "]}, "query 2 .* is empty"),
    ({"queries": []}, "no query given"),
    ({"rule": "max"}, "--rule 'max' is not one of vcs, mean"),
    ({"top": 0}, "--top must be at least 1, not 0"),
    ({"top": 5, "candidates": 3}, r"--candidates \(3\) must be at least --top \(5\)"),
    ({"template": "no braces"}, "must contain exactly one"),
])
def test_option_errors_name_the_value(tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        run_search(SearchConfig(features=tmp_path / "none.h5", **{"queries": ["q"], **options}))


def test_eval_reports_ap_and_recall_for_both_rules(tmp_path):
    rng = np.random.default_rng(7)
    directions = np.linalg.qr(rng.standard_normal((DIM, 3)))[0].T  # 3 orthogonal class directions
    labels = np.arange(30) % 3
    emb = directions[labels][:, None, None, :] * 3 + 0.3 * rng.standard_normal((30, 1, 8, DIM))
    cache = FeatureCache(make_cache(tmp_path / "l.h5", emb.astype(np.float32), labels=labels))
    vectors, _ = stage.load_index(cache, stage.Progress())
    pooled = torch.from_numpy(directions).float()

    def encode(texts):
        assert texts == ["a", "b", "c"]
        return ClassTexts(pooled, pooled[:, None, :], torch.ones(3, 1, dtype=torch.bool))

    result = stage.evaluate_retrieval(cache, vectors, encode, SearchConfig(features=cache.path, candidates=12))
    assert result["classes"] == 3 and set(result["rules"]) == {"vcs", "mean"}
    for rule in ("vcs", "mean"):
        assert result["rules"][rule]["mean"] == {"AP": 100.0, "R@1": 10.0, "R@5": 50.0, "R@10": 100.0}


def test_vcs_scores_match_the_heads_saliency():
    from bike_cli.models.heads import vcs_saliency

    frames = torch.randn(6, 1, 8, DIM)
    texts = random_texts(1, seed=9)
    _, saliency = vcs_scores(frames, texts.tokens[0], texts.token_mask[0], texts.pooled[0])
    torch.testing.assert_close(saliency[:, 0], vcs_saliency(frames[:, 0], texts.tokens, texts.token_mask)[:, 0])


def test_read_rows_equals_point_selection(big_cache):
    rows = np.array([0, 1, 2, 70, 71, 200, 299])
    np.testing.assert_array_equal(big_cache.read_rows(rows), big_cache.embeddings(rows.tolist()))
