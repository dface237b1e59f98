"""Branch checkpoints: bike's own format (Video and Attributes branches), and the authors' releases.

bike's format (schema version 1; docs/formats.md) is a `torch.save` of plain containers and tensors,
so it loads with `torch.load(weights_only=True)` (no pickled code runs):

    {"kind": "bike-video-checkpoint" | "bike-attrs-checkpoint", "schema_version": 1, "bike_version": str,
     "config": {...resolved train-video settings, paths as strings...},
     "clip": {...ClipSpec fields...}, "class_names": [str], "epoch": int, "metrics": {...},
     "state_dict": {"head.*", "logit_scale.log_scale", "visual.*" (end-to-end runs only)}}

The authors' checkpoints hold `model_state_dict` (the whole CLIP with OpenAI key names, maybe with a
`module.` prefix) and `fusion_model_state_dict` (their `video_header`: `frame_position_embeddings`
and `transformer.resblocks.*`, the same names as bike's temporal transformer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bike_cli import __version__
from bike_cli.errors import InputError
from bike_cli.io.atomic import torch_save

VIDEO_KIND = "bike-video-checkpoint"
ATTRS_KIND = "bike-attrs-checkpoint"
SCHEMA_VERSION = 1


@dataclass
class BranchCheckpoint:
    config: dict
    clip: dict
    class_names: list[str]
    epoch: int
    metrics: dict
    state_dict: dict[str, torch.Tensor]


def save_checkpoint(path: Path, ckpt: BranchCheckpoint, kind: str) -> Path:
    """Write atomically (temporary name, then rename)."""
    payload = {
        "kind": kind, "schema_version": SCHEMA_VERSION, "bike_version": __version__,
        "config": ckpt.config, "clip": ckpt.clip, "class_names": list(ckpt.class_names),
        "epoch": ckpt.epoch, "metrics": ckpt.metrics,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
    }
    return torch_save(payload, path)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _load(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    with open(path, "rb") as fh:
        if fh.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            raise InputError(f"{path} is a feature cache (HDF5), not a checkpoint: give it as --features; a "
                             "checkpoint is a train-video/train-attrs run folder or its best.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors have many types
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"{path} is not a checkpoint bike can read safely: {reason}") from None


def load_video_checkpoint(path: str | Path) -> BranchCheckpoint:
    """A Video-branch checkpoint (a file, or a run folder holding best.pt / last.pt)."""
    return load_checkpoint(path, VIDEO_KIND)


def load_attrs_checkpoint(path: str | Path) -> BranchCheckpoint:
    """An Attributes-branch checkpoint (a file, or a run folder holding best.pt / last.pt)."""
    return load_checkpoint(path, ATTRS_KIND)


def load_checkpoint(path: str | Path, kind: str) -> BranchCheckpoint:
    """bike's own checkpoint of `kind` (a file, or a run folder holding best.pt / last.pt)."""
    path = Path(path)
    if path.is_dir():
        found = next((p for p in (path / "best.pt", path / "last.pt") if p.exists()), None)
        if found is None:
            raise InputError(f"{path} is not a bike run folder: it holds no best.pt or last.pt (give the --out "
                             "folder of a train-video/train-attrs run that finished an epoch, or a checkpoint file)")
        path = found
    data = _load(path)
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else None
        raise InputError(f"{path} is not a {kind} (its kind is {found!r})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{path} has checkpoint schema {data.get('schema_version')}; bike reads {SCHEMA_VERSION}")
    return BranchCheckpoint(data["config"], data["clip"], list(data["class_names"]), int(data["epoch"]),
                           dict(data["metrics"]), dict(data["state_dict"]))


@dataclass
class AuthorsCheckpoint:
    clip_state_dict: dict[str, torch.Tensor]  # OpenAI key names, `module.` stripped
    temporal_state_dict: dict[str, torch.Tensor]  # bike TemporalTransformer names ({} without Transf)
    epoch: int | None = None  # their `epoch` entry, when there is one


def read_authors_checkpoint(path: str | Path) -> AuthorsCheckpoint:
    """The released BIKE checkpoints (`model_state_dict` + `fusion_model_state_dict`)."""
    path = Path(path)
    data = _load(path)
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
    data = _load(path)
    return isinstance(data, dict) and "model_state_dict" in data and "kind" not in data
