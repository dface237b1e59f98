"""The torch.save files bike reads and writes (docs/formats.md), all through the one safe reader
(`read_torch_file`): bike's branch checkpoints (schema 2; schema 1 still loads), the authors' released
Video-branch checkpoints, and the text-embedding files, which read as None (made again) when unusable."""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bike_cli import __version__
from bike_cli.errors import BikeError, InputError
from bike_cli.io.atomic import torch_save
from bike_cli.io.file_kind import HDF5, TORCH_KINDS, describe_file, sniff, wrong_kind

log = logging.getLogger(__name__)

VIDEO_KIND = "bike-video-checkpoint"
ATTRS_KIND = "bike-attrs-checkpoint"
LAST_FILE, BEST_FILE = "last.pt", "best.pt"  # a run folder's checkpoints: every epoch's, the best epoch's
AVERAGED_FILE = "averaged.pt"  # train-video --average-last N: the mean of the last N epochs' weights
SCHEMA_VERSION = 2  # 2 added `model_args`
READABLE_SCHEMAS = (1, 2)
AUTHORS_VCS_TOKENS = "all"  # their code queries every token position (no mask)
NO_TEMPORAL_FRAMES = 77  # position-table rows when there is no temporal transformer (unused then)
PHRASE_CACHE_KIND = "bike-phrase-embeddings"
PHRASE_CACHE_VERSION = 1
SENTENCE_CACHE_KIND = "bike-sentence-embeddings"
SENTENCE_CACHE_VERSION = 1  # earlier bike versions wrote {"key", "embeddings"} only: those are made again


@dataclass
class BranchCheckpoint:
    config: dict
    clip: dict
    class_names: list[str]
    epoch: int
    metrics: dict
    state_dict: dict[str, torch.Tensor]
    model_args: dict | None = None  # the branch spec's fields; None in schema-1 checkpoints
    origin: dict | None = None  # weights no single epoch trained: how they were made (docs/formats.md)


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
    if quick_gelu is None and pretrained and Path(pretrained).suffix != ".safetensors":
        try:
            authors = is_authors_checkpoint(pretrained)
        except BikeError:  # TorchScript archives and other files load_clip reads its own way
            authors = False
        if authors:
            log.info("%s is an authors' BIKE checkpoint: its CLIP runs with QuickGELU", pretrained)
            return True
    return quick_gelu


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


def _read_embeddings(path: Path, kind: str, version: int, what: str) -> dict | None:
    """The stored dict when `path` is bike's `what` file of `kind` and `version` holding a float [R, D]
    tensor; None otherwise (a warning names the file and what it is, unless it is absent)."""
    if not path.is_file():
        return None
    try:
        stored = read_torch_file(path, f"a {what} file (a torch.save file)")
    except BikeError as err:
        log.warning("%s: ignored, the embeddings are made again", err)
        return None
    if not isinstance(stored, dict):
        stored = {}
    emb = stored.get("embeddings")
    if stored.get("kind") != kind or not (isinstance(emb, torch.Tensor) and emb.ndim == 2
                                          and emb.is_floating_point()):
        earlier = "kind" not in stored and {"key", "embeddings"} <= stored.keys()  # bike before schema 1
        why = " (it records no kind, as earlier bike versions wrote it)" if earlier else ""
        log.warning("ignoring %s: not a bike %s file%s; the embeddings are made again", path, what, why)
        return None
    if stored.get("schema_version") != version:
        log.warning("ignoring %s: a %s file of schema version %s (this bike reads %d); the embeddings are made "
                    "again", path, what, stored.get("schema_version"), version)
        return None
    return stored


def read_phrase_cache(path: Path) -> dict | None:
    """The stored phrase embeddings (`key`, `phrases`, `embeddings` float32 [P, D]), or None."""
    return _read_embeddings(path, PHRASE_CACHE_KIND, PHRASE_CACHE_VERSION, "phrase-embedding")


def write_phrase_cache(path: Path, key: dict, phrases: Sequence[str], embeddings: torch.Tensor) -> Path:
    """Store `embeddings` [P, D] (CPU) of `phrases` under `key` at `path`; returns `path`."""
    return torch_save({"kind": PHRASE_CACHE_KIND, "schema_version": PHRASE_CACHE_VERSION, "key": key,
                       "phrases": list(phrases), "embeddings": embeddings}, path)


def read_sentence_cache(path: Path, key: dict, rows: int) -> torch.Tensor | None:
    """The stored sentence embeddings [rows, D] when `path` holds them for `key`; None when absent,
    stale or unreadable (then they are encoded again)."""
    stored = _read_embeddings(path, SENTENCE_CACHE_KIND, SENTENCE_CACHE_VERSION, "sentence-embedding")
    if stored is None or stored.get("key") != key:
        return None
    if len(stored["embeddings"]) != rows:
        log.warning("ignoring %s: %d embeddings for %d sentences; they are made again",
                    path, len(stored["embeddings"]), rows)
        return None
    return stored["embeddings"]


def write_sentence_cache(path: Path, key: dict, embeddings: torch.Tensor) -> Path:
    """Store `embeddings` [R, D] (CPU) under `key` at `path`; returns `path`."""
    return torch_save({"kind": SENTENCE_CACHE_KIND, "schema_version": SENTENCE_CACHE_VERSION, "key": key,
                       "embeddings": embeddings}, path)
