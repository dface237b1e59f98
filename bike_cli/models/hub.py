"""Downloading a pretrained tag's weights without minutes of retries when there is no network.

open_clip fetches most tags from the Hugging Face hub, whose client retries a failing request five
times with back-off, for each candidate file: ~45 s and a dozen warnings on a machine without
network before the error. So before asking it, bike checks once (one TCP connection, a few seconds
at most) that the hub's host answers; when it does not, a file already in the local hub cache is
used, and otherwise the download fails at once. With HF_HUB_OFFLINE set or a proxy configured the
check is left to the hub client.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import open_clip

PROBE_SECONDS = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"  # open_clip's file name when a tag names none
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")


class HubUnreachable(OSError):
    """The hub cannot be reached and the weights are not in the local cache."""


def download_pretrained(cfg: dict) -> str:
    """The local path of a pretrained config's weights (`open_clip.download_pretrained`, checked first)."""
    hub = cfg.get("hf_hub", "")
    if hub and not _hub_client_decides():
        endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)
        if not _reachable(endpoint):
            model_id, filename = os.path.split(hub)
            cached = _cached(model_id, filename or HF_WEIGHTS_NAME)
            if cached is None:
                raise HubUnreachable(f"{urlparse(endpoint).hostname} cannot be reached (no network?) and "
                                     f"{model_id} is not in the local Hugging Face cache")
            return cached
    return open_clip.download_pretrained(cfg)


def _hub_client_decides() -> bool:
    return bool(os.environ.get("HF_HUB_OFFLINE")) or any(os.environ.get(v) for v in PROXY_VARIABLES)


def _reachable(endpoint: str) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def _cached(model_id: str, filename: str) -> str | None:
    """A cached copy of the file (or of its .safetensors alternative, which open_clip prefers)."""
    from huggingface_hub import try_to_load_from_cache

    stem = "open_clip_model" if filename == HF_WEIGHTS_NAME else os.path.splitext(filename)[0]
    for name in (f"{stem}.safetensors", filename):
        path = try_to_load_from_cache(model_id, name)
        if isinstance(path, str):
            return path
    return None
