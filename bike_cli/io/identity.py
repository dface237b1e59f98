"""Model identity: what a cache, a checkpoint or a loaded CLIP says about the model that made it, and the
check that two files that meet agree (docs/formats.md, "Model identity"); `file_sha256`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from bike_cli.errors import CacheMismatchError

log = logging.getLogger(__name__)

FIELDS = ("compat", "model_name", "weights", "quick_gelu", "embed_dim", "image_size")
RECORD_TYPES = {"model_name": (str,), "pretrained": (str,), "checkpoint_sha256": (str, type(None)),
                "quick_gelu": (bool,), "embed_dim": (int,), "image_size": (int,)}  # what a file records
BLOCK = 1 << 20  # bytes hashed at a time: memory stays small, a stop is acted on between blocks


def _getter(record: object):
    return record.get if isinstance(record, Mapping) else (lambda key, default=None: getattr(record, key, default))


def identity_record(record: object) -> dict:
    """The identity of a ClipSpec (or CacheMeta) as a file records it (the attributes CSV's sidecar)."""
    get = _getter(record)
    return {key: get(key, None) for key in RECORD_TYPES}


def identity_of(record: object) -> dict:
    """The identity of a CacheMeta, a ClipSpec, or their dict form (a checkpoint's `clip`)."""
    get = _getter(record)
    return {
        "compat": get("compat", None),  # compared only where both sides record a profile
        "model_name": get("model_name"),
        "pretrained": get("pretrained"),
        "sha256": get("checkpoint_sha256", None) or None,
        "quick_gelu": get("quick_gelu"),
        "embed_dim": get("embed_dim"),
        "image_size": get("image_size"),
    }


def differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(field, value in a, value in b) for every identity field that differs."""
    out = []
    for name in FIELDS:
        key = ("sha256" if a["sha256"] and b["sha256"] else "pretrained") if name == "weights" else name
        if a[key] is not None and b[key] is not None and a[key] != b[key]:
            out.append((name, a[key], b[key]))
    return out


def check_same_model(a: object, a_name: str, b: object, b_name: str, allow: bool = False, *,
                     same_space: bool = True, sources: Mapping[str, str] | None = None) -> None:
    """CacheMismatchError naming both values of each differing field (a warning with `allow`).

    `same_space`: the two sides' vectors meet (cached frames and a text tower, a checkpoint's head), so
    different widths are refused even with `allow`; False where only text passes between them (two
    attributes CSVs). `sources`: for a field of `a` ("quick_gelu", "weights", ...), where its value came
    from and the option that changes it, shown beside the value."""
    ia, ib = identity_of(a), identity_of(b)
    diffs = differences(ia, ib)
    if not diffs:
        return
    sources = sources or {}
    shown = "; ".join(f"{name}: {va!r} in {a_name}{f' ({sources[name]})' if sources.get(name) else ''}, "
                      f"{vb!r} in {b_name}" for name, va, vb in diffs)
    if same_space and any(name == "embed_dim" for name, _, _ in diffs):
        raise CacheMismatchError(
            f"{a_name} ({ia['model_name']}) and {b_name} ({ib['model_name']}) embed in different widths ({shown}); "
            f"vectors of different widths cannot be compared{' (not even with --allow-model-mismatch)' if allow else ''}"
            ": use files made by one model")
    if allow:
        log.warning("model mismatch allowed by --allow-model-mismatch: %s", shown)
        return
    raise CacheMismatchError(f"{a_name} and {b_name} come from different models ({shown}); use files made by "
                             "one model, or --allow-model-mismatch if you know they agree")


def stream_sha256(stream: BinaryIO) -> str:
    """Hex sha256 of what `stream` holds from where it is to its end."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    with open(path, "rb") as f:
        return stream_sha256(f)
