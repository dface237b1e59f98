"""Branch checkpoints in bike's own format (schema version 2, docs/formats.md: a `torch.save` of plain
containers and tensors, loaded with `weights_only=True`; schema 1, without `model_args`, still loads),
and the one safe torch reader. The authors' releases are `bike_cli.io.authors_checkpoint`'s.
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from bike_cli import __version__
from bike_cli.errors import BikeError, InputError
from bike_cli.io.atomic import torch_save
from bike_cli.io.file_kind import HDF5, TORCH_KINDS, describe_file, sniff, wrong_kind

VIDEO_KIND = "bike-video-checkpoint"
ATTRS_KIND = "bike-attrs-checkpoint"
LAST_FILE, BEST_FILE = "last.pt", "best.pt"  # a run folder's checkpoints: every epoch's, the best epoch's
AVERAGED_FILE = "averaged.pt"  # train-video --average-last N: the mean of the last N epochs' weights
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
    origin: dict | None = None  # weights no single epoch trained: how they were made (module docstring)


def save_checkpoint(path: Path, ckpt: BranchCheckpoint, kind: str) -> Path:
    """Write atomically (temporary name, then rename)."""
    payload = {
        "kind": kind, "schema_version": SCHEMA_VERSION, "bike_version": __version__,
        "config": ckpt.config, "clip": ckpt.clip, "model_args": ckpt.model_args, "class_names": list(ckpt.class_names),
        "epoch": ckpt.epoch, "metrics": ckpt.metrics,
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
    }
    if ckpt.origin is not None:
        payload["origin"] = ckpt.origin
    return torch_save(payload, path)


CHECKPOINT = "a checkpoint (a torch.save file)"
_SAFE = "bike loads only tensors and plain containers, so that no code from a file runs"


def read_torch_file(path: Path, expected: str = CHECKPOINT, error: type[BikeError] = InputError) -> object:
    """A torch.save file's content, loaded with weights_only=True (no pickled code runs); for any other
    file, `error` naming it, the `expected` content and what the file is (io.file_kind)."""
    kind = sniff(path)
    if kind not in TORCH_KINDS:
        hint = ("give it as --features (a checkpoint is a train-video/train-attrs run folder or its best.pt)"
                if kind == HDF5 and expected == CHECKPOINT else "")
        raise wrong_kind(path, expected, hint, error)
    try:
        with warnings.catch_warnings():  # torch's "please file an issue" about a pickle protocol
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(f"{path} is not {_bare(expected)} bike can read safely: {_refused(err)}") from None
    except Exception as err:  # a broken zip, a cut file: RuntimeError, EOFError, ...
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise error(f"{path} is {describe_file(path)}, but not {_bare(expected)} bike can read: "
                    f"{type(err).__name__}{': ' + reason if reason else ''}") from None


def _bare(expected: str) -> str:
    """ "a checkpoint (a torch.save file)" -> "a checkpoint" """
    return expected.split(" (", 1)[0]


def _refused(err: pickle.UnpicklingError) -> str:
    """What the safe unpickler refused, without torch's advice to load the file unsafely."""
    text = str(err)
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if found:
        return f"it holds a pickled {found[1]}; {_SAFE}"
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    what = detail[1].strip().rstrip(".") if detail else type(err).__name__
    return f"its pickle has what the safe loader does not read ({what}); {_SAFE}"


def check_finite_weights(path: Path, state_dict: dict) -> None:
    """InputError naming `path` when a floating-point tensor of `state_dict` holds NaN or inf (a diverged
    run of an older bike saved it): nothing would score with it but NaN."""
    bad = [key for key, value in state_dict.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(value.isfinite().all())]
    if bad:
        raise InputError(f"{path} holds NaN or infinite weights ({len(bad)} tensor(s), e.g. {bad[0]}): the run "
                         "that saved it diverged; train it again with a lower --lr")


def load_video_checkpoint(path: str | Path) -> BranchCheckpoint:
    """A Video-branch checkpoint (a file, or a run folder holding best.pt / last.pt)."""
    return load_checkpoint(path, VIDEO_KIND)


def load_attrs_checkpoint(path: str | Path) -> BranchCheckpoint:
    """An Attributes-branch checkpoint (a file, or a run folder holding best.pt / last.pt)."""
    return load_checkpoint(path, ATTRS_KIND)


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file `path` names: the file itself, or a run folder's best.pt (else its last.pt)."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = next((p for p in (path / BEST_FILE, path / LAST_FILE) if p.exists()), None)
    if found is None:
        raise InputError(f"{path} is not a bike run folder: it holds no best.pt or last.pt (give the --out "
                         "folder of a train-video/train-attrs run that finished an epoch, or a checkpoint file)")
    return found


def load_checkpoint(path: str | Path, kind: str) -> BranchCheckpoint:
    """bike's own checkpoint of `kind` (a file, or a run folder holding best.pt / last.pt)."""
    path = checkpoint_file(path)
    data = read_torch_file(path)
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else None
        raise InputError(f"{path} is not a {kind} (its kind is {found!r})")
    if data.get("schema_version") not in READABLE_SCHEMAS:
        raise InputError(f"{path} has checkpoint schema {data.get('schema_version')}; bike reads "
                         f"{' and '.join(map(str, READABLE_SCHEMAS))}")
    model_args, origin = data.get("model_args"), data.get("origin")
    ckpt = BranchCheckpoint(data["config"], data["clip"], list(data["class_names"]), int(data["epoch"]),
                            dict(data["metrics"]), dict(data["state_dict"]),
                            dict(model_args) if model_args is not None else None,
                            dict(origin) if origin is not None else None)
    check_finite_weights(path, ckpt.state_dict)
    return ckpt
