"""`--workers` starts only the loader workers that can help: one per usable core and per item, said in a log line."""

from __future__ import annotations

import logging

import pytest

import bike_cli.engine.runtime as runtime


@pytest.mark.parametrize("requested, cores, items, started", [(32, 16, 6, 6), (32, 2, 6, 2), (2, 16, 6, 2),
                                                              (0, 16, 6, 0), (4, 16, 0, 0)])
def test_workers_are_capped_by_cores_and_items(monkeypatch, caplog, requested, cores, items, started):
    monkeypatch.setattr(runtime, "usable_cores", lambda: cores)
    with caplog.at_level(logging.INFO, logger="bike_cli"):
        assert runtime.loader_workers(requested, items) == started
    capped = [r.getMessage() for r in caplog.records if "--workers" in r.getMessage()]
    if started < requested and items:
        assert capped == [f"--workers {requested}: starting {started} ({cores} usable CPU cores, {items} items to load)"]
    else:
        assert capped == []


def test_extract_with_more_workers_than_videos_starts_one_per_video(tmp_path, sample_data, caplog, monkeypatch):
    from bike_cli.config.stages import ExtractConfig
    from bike_cli.stages.extract import run_extraction

    monkeypatch.setattr(runtime, "usable_cores", lambda: 64)
    listed = tmp_path / "two.csv"
    listed.write_text("".join(sample_data.train.read_text().splitlines(keepends=True)[:3]))
    with caplog.at_level(logging.INFO, logger="bike_cli"):
        summary = run_extraction(ExtractConfig(list_path=listed, root=sample_data.root, out=tmp_path / "c.h5", classes=sample_data.classes,
                                               frames=2, workers=32, model="bike-tiny", pretrained="none"))
    assert summary.cached == 2
    assert "--workers 32: starting 2 (64 usable CPU cores, 2 items to load)" in caplog.text
