"""The text-embedding files bike keeps to skip encoding again (docs/formats.md): phrase embeddings of
`gen-attributes` (`ATTRS.phrases.pt`) and sentence embeddings of `train-attrs --tune head`. A file that
is absent, torn, foreign, or of another kind, schema or key reads as None (a warning where it is not
bike's file of that kind): the embeddings are made again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from bike_cli.errors import BikeError
from bike_cli.io.atomic import torch_save
from bike_cli.io.checkpoints import read_torch_file

log = logging.getLogger(__name__)

PHRASE_CACHE_KIND = "bike-phrase-embeddings"
PHRASE_CACHE_VERSION = 1
SENTENCE_CACHE_KIND = "bike-sentence-embeddings"
SENTENCE_CACHE_VERSION = 1  # earlier bike versions wrote {"key", "embeddings"} only: those are made again


def _read(path: Path, kind: str, version: int, what: str) -> dict | None:
    """The stored dict when `path` is bike's `what` file of `kind` and `version` holding a float [R, D]
    tensor; None otherwise (a warning names the file and what it is, unless it is absent)."""
    if not path.is_file():
        return None
    try:
        stored = read_torch_file(path, f"a {what} file (a torch.save file)")
    except BikeError as err:
        log.warning("%s: ignored, the embeddings are made again", err)
        return None
    if not isinstance(stored, dict):
        stored = {}
    emb = stored.get("embeddings")
    if stored.get("kind") != kind or not (isinstance(emb, torch.Tensor) and emb.ndim == 2
                                          and emb.is_floating_point()):
        earlier = "kind" not in stored and {"key", "embeddings"} <= stored.keys()  # bike before schema 1
        why = " (it records no kind, as earlier bike versions wrote it)" if earlier else ""
        log.warning("ignoring %s: not a bike %s file%s; the embeddings are made again", path, what, why)
        return None
    if stored.get("schema_version") != version:
        log.warning("ignoring %s: a %s file of schema version %s (this bike reads %d); the embeddings are made "
                    "again", path, what, stored.get("schema_version"), version)
        return None
    return stored


def read_phrase_cache(path: Path) -> dict | None:
    """The stored phrase embeddings (`key`, `phrases`, `embeddings` float32 [P, D]), or None."""
    return _read(path, PHRASE_CACHE_KIND, PHRASE_CACHE_VERSION, "phrase-embedding")


def write_phrase_cache(path: Path, key: dict, phrases: Sequence[str], embeddings: torch.Tensor) -> Path:
    """Store `embeddings` [P, D] (CPU) of `phrases` under `key` at `path`; returns `path`."""
    return torch_save({"kind": PHRASE_CACHE_KIND, "schema_version": PHRASE_CACHE_VERSION, "key": key,
                       "phrases": list(phrases), "embeddings": embeddings}, path)


def read_sentence_cache(path: Path, key: dict, rows: int) -> torch.Tensor | None:
    """The stored sentence embeddings [rows, D] when `path` holds them for `key`; None when absent,
    stale or unreadable (then they are encoded again)."""
    stored = _read(path, SENTENCE_CACHE_KIND, SENTENCE_CACHE_VERSION, "sentence-embedding")
    if stored is None or stored.get("key") != key:
        return None
    if len(stored["embeddings"]) != rows:
        log.warning("ignoring %s: %d embeddings for %d sentences; they are made again",
                    path, len(stored["embeddings"]), rows)
        return None
    return stored["embeddings"]


def write_sentence_cache(path: Path, key: dict, embeddings: torch.Tensor) -> Path:
    """Store `embeddings` [R, D] (CPU) under `key` at `path`; returns `path`."""
    return torch_save({"kind": SENTENCE_CACHE_KIND, "schema_version": SENTENCE_CACHE_VERSION, "key": key,
                       "embeddings": embeddings}, path)
