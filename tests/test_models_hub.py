"""Pretrained tags offline: a cached file is used, a missing one fails at once (no retry loop)."""

from __future__ import annotations

import pytest

from bike_cli.models import clip as hub

CFG = {"hf_hub": "org/model/", "quick_gelu": True}


def test_unreachable_hub_uses_the_cached_file(monkeypatch, tmp_path):
    cached = tmp_path / "open_clip_model.safetensors"
    asked = []
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for variable in hub.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(hub, "_reachable", lambda endpoint: False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache",
                        lambda repo, name: asked.append((repo, name)) or (str(cached) if name.endswith(".safetensors")
                                                                          else None))
    monkeypatch.setattr(hub.open_clip, "download_pretrained", lambda cfg: pytest.fail("no download offline"))
    assert hub.download_pretrained(CFG) == str(cached)
    assert asked == [("org/model", "open_clip_model.safetensors")]


def test_unreachable_hub_without_the_file_fails_at_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for variable in hub.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(hub, "_reachable", lambda endpoint: False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo, name: None)
    with pytest.raises(hub.HubUnreachable, match="org/model is not in the local Hugging Face cache"):
        hub.download_pretrained(CFG)


def test_closed_port_is_unreachable():
    assert not hub._reachable("http://127.0.0.1:9")
