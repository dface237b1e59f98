"""CLIP weights from files: state dicts (torch.save / safetensors) and OpenAI TorchScript archives.

Files are read without running code from them: `torch.load(weights_only=True)` or safetensors.
TorchScript archives go through `open_clip.load_openai_model`, i.e. `torch.jit.load`, which runs
the archive's TorchScript (not arbitrary Python) as OpenAI's own loader does. A state dict may be
nested under `state_dict`, `model_state_dict` or `model` and carry DDP's `module.` prefix; it is
fitted to the model as open_clip's own loader does, and a misfit names the offending keys.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import open_clip
import torch
from open_clip.convert import convert_state_dict
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed
from safetensors.torch import load_file as load_safetensors
from torch import nn

from bike_cli.errors import ModelLoadError
from bike_cli.io.checkpoints import read_torch_file
from bike_cli.io.file_kind import SAFETENSORS, sniff

_NESTED_KEYS = ("state_dict", "model_state_dict", "model")  # where training checkpoints keep the CLIP weights
_OPENAI_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # in OpenAI's archives, not weights
_SHOW = 5  # how many offending keys an error message names
CLIP_WEIGHTS = "CLIP weights (a torch.save state dict, .safetensors file or OpenAI TorchScript archive)"


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with `<name>/constants.pkl` (plain torch.save zips have none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in archive.namelist())
    except zipfile.BadZipFile:
        return False


def load_torchscript(name: str, path: Path, device: torch.device) -> nn.Module:
    """An OpenAI TorchScript archive, checked against the shapes of architecture `name`."""
    try:
        model = open_clip.load_openai_model(str(path), precision="fp32", device=device)
    except Exception as e:
        raise ModelLoadError(f"cannot load the TorchScript archive {path}: {e}") from e
    try:  # the named architecture's shapes, built on the meta device (no memory, no init)
        with torch.device("meta"):
            reference = open_clip.CLIP(**open_clip.get_model_config(name))
    except Exception as e:
        raise ModelLoadError(f"{path} is an OpenAI TorchScript archive; {name} is no standard CLIP: {e}") from e
    check_fits(reference.state_dict(), model.state_dict(), path, name)
    return model


def load_state_dict_file(model: nn.Module, name: str, path: Path) -> None:
    state = read_state_dict(path)
    try:
        state = fit_to_model(model, state)
    except Exception as e:  # resizing position embeddings of another architecture fails
        check_fits(model.state_dict(), state, path, name)  # names the keys that do not fit
        raise ModelLoadError(f"{path} does not fit the {name} architecture: {e}") from e
    check_fits(model.state_dict(), state, path, name)
    model.load_state_dict(state)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from training-checkpoint nesting and `module.`."""
    if sniff(path) == SAFETENSORS:
        try:
            obj = load_safetensors(str(path))
        except Exception as e:  # a cut or malformed file: SafetensorError
            raise ModelLoadError(f"{path} is a safetensors file bike cannot read: {e}") from None
    else:
        obj = read_torch_file(path, CLIP_WEIGHTS, ModelLoadError)
    while isinstance(obj, Mapping):
        nested = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None:
            break
        obj = obj[nested]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"{path} holds no state dict (looked under {', '.join(_NESTED_KEYS)} too)")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelLoadError(f"{path} is no state dict: entries that are not tensors: {not_tensors[:_SHOW]}")
    return {k.removeprefix("module."): v for k, v in obj.items() if k not in _OPENAI_JIT_EXTRAS}


def fit_to_model(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's conversions, as in `open_clip.factory.load_checkpoint` (which only takes a path):
    third-party layouts, the old text-tower layout, 0-d vs 1-d logit scale, position embeddings
    of another image size or context length (resized)."""
    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        own = getattr(model, key, None)
        if key in state and own is not None and own.ndim != state[key].ndim:
            state[key] = state[key].reshape(own.shape)
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    return state


def check_fits(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: Path,
                name: str) -> None:
    """ModelLoadError naming a few missing / unexpected / wrongly shaped keys, if there are any."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:_SHOW])}{', ...' if len(keys) > _SHOW else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shapes, checkpoint vs model", shapes))
        if keys
    ]
    if problems:
        raise ModelLoadError(
            f"{path} does not fit the {name} architecture (a checkpoint of another model?): "
            + "; ".join(problems)
        )
