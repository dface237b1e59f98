"""A digest of a CLIP image tower's weights, to tell whether features and a checkpoint belong together.

The authors fine-tune CLIP's visual encoder: the frame features of a cache made with the original
CLIP are not what their checkpoint's encoder computes. `visual_sha256` hashes the `visual.*` tensors
(names sorted, values as float32 bytes, so fp16 and fp32 copies of the same weights agree); the
feature cache records it (`visual_sha256`) and stages that combine a checkpoint with a cache compare.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

from bike_cli.errors import CacheMismatchError

PREFIX = "visual."


def visual_sha256(state_dict: Mapping[str, torch.Tensor], prefix: str = PREFIX) -> str | None:
    """Hex sha256 of the `prefix` tensors of a state dict (None when it has none)."""
    keys = sorted(k for k in state_dict if k.startswith(prefix))
    if not keys:
        return None
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key[len(prefix):].encode())
        digest.update(state_dict[key].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_visual_weights(checkpoint_sha: str | None, cache_sha: str | None, checkpoint: object, cache: object,
                         ignore: bool = False) -> None:
    """CacheMismatchError when a checkpoint's visual weights differ from those that made a cache.

    `ignore` (--ignore-visual-weights) makes it a no-op; so does a checkpoint without visual weights.
    """
    if ignore or checkpoint_sha is None or checkpoint_sha == cache_sha:
        return
    made_by = f"visual weights sha256 {cache_sha}" if cache_sha else "visual weights it does not record (made before bike recorded them)"
    raise CacheMismatchError(
        f"{checkpoint} holds its own visual encoder (visual weights sha256 {checkpoint_sha}), but {cache} was "
        f"extracted by another one ({made_by}). Extract the features with the checkpoint's own weights "
        f"(bike extract-features --pretrained {checkpoint} ...), or pass --ignore-visual-weights to use "
        "this cache anyway"
    )
