"""The sentence-embedding cache of `train-attrs --tune head` (`sentence_embeddings_<split>.pt`,
docs/formats.md): `{"key": {...}, "embeddings": float [R, D]}`, reused while `key` matches."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from bike_cli.io.atomic import torch_save

log = logging.getLogger(__name__)


def read_sentence_cache(cache: Path, key: dict) -> torch.Tensor | None:
    """The stored embeddings [R, D] when `cache` holds them for `key`; None when absent, stale or
    unreadable (then they are encoded again)."""
    if not cache.is_file():
        return None
    try:
        stored = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn or foreign file (loading runs no code: weights_only)
        log.warning("ignoring the unreadable sentence-embedding cache %s (%s)", cache, err)
        return None
    if isinstance(stored, dict) and stored.get("key") == key and isinstance(stored.get("embeddings"), torch.Tensor):
        return stored["embeddings"]
    return None


def write_sentence_cache(cache: Path, key: dict, embeddings: torch.Tensor) -> None:
    """Store `embeddings` [R, D] under `key` (atomically)."""
    torch_save({"key": key, "embeddings": embeddings}, cache)
