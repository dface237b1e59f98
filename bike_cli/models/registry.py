"""Model names (bike's `configs/*.json` architectures registered with open_clip on import), tokenizers,
and the hints for missing optional packages and an unreachable Hugging Face hub."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch

from bike_cli.errors import ModelLoadError

CONFIG_DIR = Path(__file__).with_name("configs")
HF_EXTRA = "pip install 'bike-cli[hf]'"  # the optional packages Hugging Face towers and tokenizers need
HUB_HINT = ("it is downloaded from the Hugging Face hub on first use, and the hub cannot be reached from here: "
            "run once on a machine that can reach it (the files are cached in ~/.cache/huggingface)")


def register_configs() -> None:
    """Register bike's architectures (`configs/*.json`) with open_clip; a no-op once done."""
    names = {p.stem for p in CONFIG_DIR.glob("*.json")}
    if not names <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


register_configs()


def resolve_model_name(model_name: str) -> str:
    """The registered open_clip name (`ViT-B/32` -> `ViT-B-32`); ModelLoadError naming close names."""
    name = model_name.replace("/", "-")
    known = open_clip.list_models()
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"open_clip.list_models() lists all {len(known)}"
    raise ModelLoadError(f"unknown model architecture {model_name!r}; {hint}")


def configured_embed_dim(model_name: str) -> int | None:
    """The embedding width of `model_name` as its open_clip config gives it, known without building the model
    (None where the config names none); ModelLoadError for an unknown name."""
    dim = (open_clip.get_model_config(resolve_model_name(model_name)) or {}).get("embed_dim")
    return int(dim) if dim is not None else None


def missing_package(exc: BaseException) -> str | None:
    """The optional package an open_clip error says is missing (transformers, sentencepiece), if any."""
    text = f"{type(exc).__name__}: {exc}"
    for package in ("transformers", "sentencepiece", "tokenizers"):
        if package in text and (isinstance(exc, ImportError) or "pip install" in text):
            return package
    return None


def hub_unreachable(exc: BaseException) -> bool:
    """Whether transformers / huggingface_hub failed to download files (no network, offline mode)."""
    text = str(exc).lower()
    return "couldn't connect" in text or "offline mode" in text or "cannot find the requested files" in text


def get_tokenizer(model_name: str) -> Callable[[str | list[str]], torch.Tensor]:
    """open_clip's tokenizer for the architecture (bundled BPE for CLIP models: works offline; Hugging Face ones
    need `transformers` and the hub on first use: ModelLoadError when that is not possible)."""
    name = resolve_model_name(model_name)
    try:
        return open_clip.get_tokenizer(name)
    except Exception as e:  # ImportError, OSError (offline hub), ValueError, ...
        package = missing_package(e)
        if package:
            raise ModelLoadError(f"{name}'s tokenizer needs the {package} package: {HF_EXTRA}") from e
        if hub_unreachable(e):
            raise ModelLoadError(f"cannot load the tokenizer of {name}: {HUB_HINT}") from e
        raise ModelLoadError(f"cannot load the tokenizer of {name} (downloaded from the Hugging Face hub on "
                             f"first use): {type(e).__name__}: {e}") from e
