"""Branch checkpoints in bike's own format (Video and Attributes branches); the authors' releases
are read by `bike_cli.io.authors_checkpoint`.

bike's format (schema version 2; docs/formats.md) is a `torch.save` of plain containers and tensors,
so it loads with `torch.load(weights_only=True)` (no pickled code runs):

    {"kind": "bike-video-checkpoint" | "bike-attrs-checkpoint", "schema_version": 2, "bike_version": str,
     "config": {...resolved train-video settings, paths as strings...},
     "clip": {...ClipSpec fields...},
     "model_args": {...the branch spec's fields (bike_cli.models.build): what rebuilds the module...},
     "class_names": [str], "epoch": int, "metrics": {...},
     "state_dict": {"head.*", "logit_scale.log_scale", "visual.*" (end-to-end runs only)}}

Schema 1 is the same without `model_args`: such checkpoints still load (`model_args` is None; the
builder derives the spec from `config` and `clip`).
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
SCHEMA_VERSION = 2  # 2 added `model_args`
READABLE_SCHEMAS = (1, 2)


@dataclass
class BranchCheckpoint:
    config: dict
    clip: dict
    class_names: list[str]
    epoch: int
    metrics: dict
    state_dict: dict[str, torch.Tensor]
    model_args: dict | None = None  # the branch spec's fields; None in schema-1 checkpoints


def save_checkpoint(path: Path, ckpt: BranchCheckpoint, kind: str) -> Path:
    """Write atomically (temporary name, then rename)."""
    payload = {
        "kind": kind, "schema_version": SCHEMA_VERSION, "bike_version": __version__,
        "config": ckpt.config, "clip": ckpt.clip, "model_args": ckpt.model_args, "class_names": list(ckpt.class_names),
        "epoch": ckpt.epoch, "metrics": ckpt.metrics,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
    }
    return torch_save(payload, path)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_torch_file(path: Path) -> dict:
    """A checkpoint file's content, loaded with weights_only=True; InputError for what is none."""
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
    data = read_torch_file(path)
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else None
        raise InputError(f"{path} is not a {kind} (its kind is {found!r})")
    if data.get("schema_version") not in READABLE_SCHEMAS:
        raise InputError(f"{path} has checkpoint schema {data.get('schema_version')}; bike reads "
                         f"{' and '.join(map(str, READABLE_SCHEMAS))}")
    model_args = data.get("model_args")
    return BranchCheckpoint(data["config"], data["clip"], list(data["class_names"]), int(data["epoch"]),
                           dict(data["metrics"]), dict(data["state_dict"]),
                           dict(model_args) if model_args is not None else None)
