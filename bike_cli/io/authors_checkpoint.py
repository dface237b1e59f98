"""The authors' released Video-branch checkpoints (docs/formats.md): reading the file, mapping keys, and
the temporal module the keys tell. Their CLIP runs with QuickGELU and their VCS queries are all token
positions (`AUTHORS_VCS_TOKENS`); building the branch is `bike_cli.models.factory.load_video_branch`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from bike_cli.errors import BikeError, InputError
from bike_cli.io.checkpoints import read_torch_file

log = logging.getLogger(__name__)

AUTHORS_VCS_TOKENS = "all"  # their code queries every token position (no mask)
NO_TEMPORAL_FRAMES = 77  # position-table rows when there is no temporal transformer (unused then)


@dataclass
class AuthorsCheckpoint:
    clip_state_dict: dict[str, torch.Tensor]  # OpenAI key names, `module.` stripped
    temporal_state_dict: dict[str, torch.Tensor]  # bike TemporalTransformer names ({} without Transf)
    epoch: int | None = None  # their `epoch` entry, when there is one


@dataclass(frozen=True)
class AuthorsTemporal:
    """The temporal module the fusion weights describe."""

    temporal: str  # "transformer" | "none"
    layers: int  # resblocks (1 without a transformer)
    max_frames: int  # rows of `frame_position_embeddings`


def read_authors_checkpoint(path: str | Path) -> AuthorsCheckpoint:
    """The released BIKE checkpoints (`model_state_dict` + `fusion_model_state_dict`)."""
    path = Path(path)
    data = read_torch_file(path)
    if not isinstance(data, dict) or "model_state_dict" not in data:
        raise InputError(f"{path} has no 'model_state_dict': not a checkpoint of the authors' BIKE code")
    strip = lambda sd: {k.removeprefix("module."): v for k, v in sd.items()}  # noqa: E731
    epoch = data.get("epoch")
    return AuthorsCheckpoint(strip(data["model_state_dict"]), strip(data.get("fusion_model_state_dict") or {}),
                             int(epoch) if isinstance(epoch, (int, float)) else None)


def is_authors_checkpoint(path: str | Path) -> bool:
    """True for a file holding `model_state_dict` (the authors' layout), False for bike's own."""
    path = Path(path)
    if not path.is_file():  # a run folder, or a missing file (its loader names the problem)
        return False
    data = read_torch_file(path)
    return isinstance(data, dict) and "model_state_dict" in data and "kind" not in data


def authors_quick_gelu(pretrained: str | None, quick_gelu: bool | None) -> bool | None:
    """QuickGELU on for an authors' checkpoint given as CLIP weights, unless the user chose."""
    if quick_gelu is None and pretrained and _looks_like_authors(Path(pretrained)):
        log.info("%s is an authors' BIKE checkpoint: its CLIP runs with QuickGELU", pretrained)
        return True
    return quick_gelu


def _looks_like_authors(path: Path) -> bool:
    if not path.is_file() or path.suffix == ".safetensors":
        return False
    try:
        return is_authors_checkpoint(path)
    except BikeError:  # TorchScript archives and other files load_clip reads its own way
        return False


def authors_temporal(authors: AuthorsCheckpoint, path: Path) -> AuthorsTemporal:
    """The temporal module of the fusion weights; InputError for weights of another module."""
    state = authors.temporal_state_dict
    if "frame_position_embeddings.weight" not in state:
        if state:
            raise InputError(f"{path}: fusion_model_state_dict holds {sorted(state)[:3]}, which is no "
                             "temporal transformer bike knows")
        return AuthorsTemporal("none", 1, NO_TEMPORAL_FRAMES)
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    return AuthorsTemporal("transformer", layers, state["frame_position_embeddings.weight"].shape[0])


def authors_branch_state(authors: AuthorsCheckpoint) -> dict[str, torch.Tensor]:
    """The checkpoint in a bike Video branch's names: `head.temporal.*`, `visual.*`, `logit_scale.log_scale`."""
    state = {f"head.temporal.{k}": v for k, v in authors.temporal_state_dict.items()}
    state.update({k: v for k, v in authors.clip_state_dict.items() if k.startswith("visual.")})
    if "logit_scale" in authors.clip_state_dict:
        state["logit_scale.log_scale"] = authors.clip_state_dict["logit_scale"].reshape(())
    return state
