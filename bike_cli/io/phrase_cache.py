"""The phrase-embedding file of `bike gen-attributes` (`OUT.phrases.pt`, docs/formats.md).

A `torch.save` dict read with `weights_only=True`: `kind` (PHRASE_CACHE_KIND), `schema_version`
(PHRASE_CACHE_VERSION), `key` (what the embeddings depend on, made by
`bike_cli.models.attributes.phrase_cache_key`), `phrases` and `embeddings` float32 [P, D]. Written
under a temporary name and renamed. A file that is absent, torn, foreign or of another schema
version reads as None: the embeddings are then made again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from bike_cli.io.atomic import torch_save

log = logging.getLogger(__name__)

PHRASE_CACHE_KIND = "bike-phrase-embeddings"
PHRASE_CACHE_VERSION = 1


def read_phrase_cache(path: Path) -> dict | None:
    """The stored phrase embeddings, or None when absent or unreadable (then they are made again)."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file: torch reports many error types
        log.warning("ignoring the unreadable phrase-embedding file %s (%s)", path, e)
        return None
    ok = (isinstance(stored, dict) and stored.get("kind") == PHRASE_CACHE_KIND
          and stored.get("schema_version") == PHRASE_CACHE_VERSION
          and isinstance(stored.get("embeddings"), torch.Tensor))
    if not ok:
        log.warning("ignoring %s: not a bike phrase-embedding file of schema version %d", path, PHRASE_CACHE_VERSION)
        return None
    return stored


def write_phrase_cache(path: Path, key: dict, phrases: Sequence[str], embeddings: torch.Tensor) -> Path:
    """Store `embeddings` [P, D] (CPU) of `phrases` under `key` at `path`; returns `path`."""
    return torch_save({"kind": PHRASE_CACHE_KIND, "schema_version": PHRASE_CACHE_VERSION, "key": key,
                       "phrases": list(phrases), "embeddings": embeddings}, path)
