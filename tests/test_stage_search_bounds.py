"""`search` does bounded work and owns its outputs: queries in chunks, sheets in pages, the outputs'
writer locks held and a killed run's temporary files removed."""

from __future__ import annotations

import numpy as np
import pytest
from test_stage_search import DIM, make_cache

import bike_cli.report.figures as sheet_module
import bike_cli.stages.search as stage
from bike_cli.config.stages import SearchConfig
from bike_cli.io.guard import OutputLockedError, WriterLock
from bike_cli.report.figures import sheet_pages
from bike_cli.stages.search import run_search

QUERIES = ["a dog", "a red square", "moving left", "a blue circle", "a cat jumping"]


@pytest.fixture
def cache(tmp_path):
    emb = np.random.default_rng(0).standard_normal((6, 1, 4, DIM)).astype(np.float32)
    return make_cache(tmp_path / "c.h5", emb)


def test_queries_are_encoded_and_scored_in_chunks_with_the_same_hits(cache, monkeypatch):
    whole = run_search(SearchConfig(features=cache, queries=QUERIES, top=3))
    sizes = []
    encode = stage.encode_class_texts
    monkeypatch.setattr(stage, "encode_class_texts", lambda m, t, texts, *a, **k: sizes.append(len(texts)) or
                        encode(m, t, texts, *a, **k))
    monkeypatch.setattr(stage, "QUERY_CHUNK", 2)
    chunked = run_search(SearchConfig(features=cache, queries=QUERIES, top=3))
    assert sizes == [2, 2, 1]
    assert [[(h.video_id, round(h.score, 5)) for h in q.hits] for q in chunked.queries] == \
        [[(h.video_id, round(h.score, 5)) for h in q.hits] for q in whole.queries]


def test_a_sheet_of_more_queries_than_a_page_holds_is_drawn_as_numbered_pages(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(sheet_module, "SHEET_ROWS", 2)
    result = run_search(SearchConfig(features=cache, queries=QUERIES, top=2, rule="mean", sheet=tmp_path / "s.png"))
    assert result.sheets == [tmp_path / f"s-{k}.png" for k in (1, 2, 3)]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.sheets) and not (tmp_path / "s.png").exists()
    assert [list(shown) for _, shown in sheet_pages(tmp_path / "s.png", 5)] == [[0, 1], [2, 3], [4]]
    assert sheet_pages(tmp_path / "s.png", 2) == [(tmp_path / "s.png", range(2))]


def test_search_holds_its_outputs_locks_and_sweeps_a_killed_run_s_temporary_files(cache, tmp_path):
    out, sheet = tmp_path / "hits.csv", tmp_path / "s.png"
    left = [tmp_path / ".hits.csv.4242.0badf00d.tmp", tmp_path / ".s.png.4242.0badf00d.tmp"]
    for path in left:
        path.write_text("half written")
    (tmp_path / "notes.tmp").write_text("mine")
    with WriterLock(sheet), pytest.raises(OutputLockedError, match="s.png is being written by process"):
        run_search(SearchConfig(features=cache, queries=["a dog"], out=out, sheet=sheet))
    assert all(path.exists() for path in left) and not out.exists()
    run_search(SearchConfig(features=cache, queries=["a dog"], top=2, out=out, sheet=sheet))
    assert out.is_file() and sheet.is_file() and not any(path.exists() for path in left)
    assert (tmp_path / "notes.tmp").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == []


def test_the_readme_gives_the_page_and_chunk_sizes_bike_uses():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"A sheet holds {sheet_module.SHEET_ROWS} queries" in readme
    assert f"scored {stage.QUERY_CHUNK} at a time" in readme
