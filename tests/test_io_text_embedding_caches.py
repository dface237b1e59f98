"""The phrase- and sentence-embedding files: read through the one safe torch reader, each with its kind
and schema version; anything else is named in a warning and made again, never trusted."""

from __future__ import annotations

import logging

import pytest
import torch

from bike_cli.io.checkpoints import (
    PHRASE_CACHE_KIND,
    SENTENCE_CACHE_KIND,
    read_phrase_cache,
    read_sentence_cache,
    write_phrase_cache,
    write_sentence_cache,
)

KEY = {"model_name": "bike-tiny", "attributes_sha256": "ab" * 32, "split": "train"}


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_written_sentence_cache_reads_back_for_its_key_and_row_count(tmp_path):
    path = tmp_path / "sentence_embeddings_train.pt"
    emb = torch.randn(5, 8)
    write_sentence_cache(path, KEY, emb)
    stored = torch.load(path, weights_only=True)
    assert stored["kind"] == SENTENCE_CACHE_KIND and stored["schema_version"] == 1
    assert torch.equal(read_sentence_cache(path, KEY, 5), emb)
    assert read_sentence_cache(path, {**KEY, "split": "val"}, 5) is None  # another key: made again


def test_a_sentence_cache_of_another_row_count_is_made_again(tmp_path, caplog):
    path = tmp_path / "s.pt"
    write_sentence_cache(path, KEY, torch.randn(5, 8))
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        assert read_sentence_cache(path, KEY, 6) is None
    assert any("5 embeddings for 6 sentences" in m for m in warnings_of(caplog))


def test_an_earlier_bike_versions_sentence_cache_without_a_kind_is_made_again(tmp_path, caplog):
    path = tmp_path / "s.pt"
    torch.save({"key": KEY, "embeddings": torch.randn(5, 8)}, path)
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        assert read_sentence_cache(path, KEY, 5) is None
    assert any(str(path) in m and "records no kind" in m for m in warnings_of(caplog))


def test_a_torch_file_that_is_not_a_dict_is_not_called_an_earlier_bike_file(tmp_path, caplog):
    path = tmp_path / "s.pt"
    torch.save(torch.randn(5, 8), path)
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        assert read_sentence_cache(path, KEY, 5) is None
    [message] = warnings_of(caplog)
    assert str(path) in message and "not a bike sentence-embedding file" in message
    assert "earlier bike" not in message


@pytest.mark.parametrize("content, said", [
    (b"", "empty"),
    (b"video_id,label\n", "text"),
    (b"\x89HDF\r\n\x1a\n" + bytes(64), "HDF5"),
])
def test_a_file_of_another_kind_is_named_for_what_it_is_and_made_again(tmp_path, caplog, content, said):
    path = tmp_path / "s.pt"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        assert read_sentence_cache(path, KEY, 5) is None
        assert read_phrase_cache(path) is None
    messages = warnings_of(caplog)
    assert len(messages) == 2 and all(str(path) in m and said in m and "made again" in m for m in messages)


def test_a_pickle_holding_code_is_refused_not_run(tmp_path, caplog):
    path = tmp_path / "p.pt"
    torch.save({"kind": PHRASE_CACHE_KIND, "schema_version": 1, "payload": logging.LogRecord}, path)
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        assert read_phrase_cache(path) is None
    assert any("logging.LogRecord" in m and "weights_only" not in m for m in warnings_of(caplog))


def test_a_phrase_file_of_the_other_kind_or_another_schema_is_made_again(tmp_path, caplog):
    sentence, future = tmp_path / "s.pt", tmp_path / "f.pt"
    write_sentence_cache(sentence, KEY, torch.randn(3, 4))
    torch.save({"kind": PHRASE_CACHE_KIND, "schema_version": 9, "key": KEY, "phrases": ["a"],
                "embeddings": torch.randn(1, 4)}, future)
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        assert read_phrase_cache(sentence) is None
        assert read_phrase_cache(future) is None
    messages = warnings_of(caplog)
    assert any("not a bike phrase-embedding file" in m and str(sentence) in m for m in messages)
    assert any("schema version 9" in m and str(future) in m for m in messages)


def test_a_written_phrase_cache_reads_back(tmp_path):
    path = tmp_path / "a.phrases.pt"
    emb = torch.randn(3, 4)
    write_phrase_cache(path, KEY, ["x", "y", "z"], emb)
    stored = read_phrase_cache(path)
    assert stored["key"] == KEY and stored["phrases"] == ["x", "y", "z"] and torch.equal(stored["embeddings"], emb)


def test_an_absent_file_reads_as_none_without_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        assert read_phrase_cache(tmp_path / "none.pt") is None
        assert read_sentence_cache(tmp_path / "none.pt", KEY, 1) is None
    assert warnings_of(caplog) == []
