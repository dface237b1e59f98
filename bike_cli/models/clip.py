"""Load an open_clip CLIP from a pretrained tag, a weights file (state dict, possibly nested or `module.`-prefixed,
.safetensors, OpenAI TorchScript; no Python run from it) or `none` (one fixed random init); its `ClipSpec`.

QuickGELU (open_clip 3.3 leaves it off for a tag; exact GELU on OpenAI's weights gives silently worse features):
a tag's config decides, TorchScript always has it, else `quick_gelu` (None: on for `-quickgelu` names); a
contradicting `quick_gelu` is an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.convert import convert_state_dict
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed
from safetensors.torch import load_file as load_safetensors
from torch import nn

from bike_cli.errors import CacheMismatchError, InputError, ModelLoadError, as_user_error
from bike_cli.io.checkpoints import read_torch_file
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.file_kind import SAFETENSORS, sniff, wrong_kind
from bike_cli.io.identity import check_same_model, file_sha256
from bike_cli.models.registry import (
    HF_EXTRA,
    HUB_HINT,
    configured_embed_dim,
    hub_unreachable,
    missing_package,
    resolve_model_name,
)

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0  # 'none' is one fixed random init, so that runs (and resumed caches) agree
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")  # where training checkpoints keep the CLIP weights
_OPENAI_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # in OpenAI's archives, not weights
_SHOW = 5  # how many offending keys an error message names
CLIP_WEIGHTS = "CLIP weights (a torch.save state dict, .safetensors file or OpenAI TorchScript archive)"
PROBE_SECONDS = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"  # open_clip's file name when a tag names none
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
PREFIX = "visual."
RESIZE_MODES = ("shortest", "squash", "longest")
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


@dataclass(frozen=True)
class ClipSpec:
    """What a feature cache records about the model that made it."""

    model_name: str
    pretrained: str  # tag, 'none', or the checkpoint path as given
    checkpoint_sha256: str | None  # sha256 of the checkpoint file when pretrained is a path
    quick_gelu: bool
    image_size: int  # square input side (model.visual.image_size)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int
    interpolation: str = "bicubic"  # the model's preprocess config (recorded; bike resizes in the decoder)
    resize_mode: str = "shortest"  # shortest / squash / longest: how the centre view is made


def make_spec(model: nn.Module, name: str, pretrained: str, sha256: str | None, quick_gelu: bool) -> ClipSpec:
    """The `ClipSpec` of a loaded model of architecture `name`; ValueError for one bike cannot feed (not square,
    unknown resize mode)."""
    visual = model.visual
    size = visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    if height != width:
        raise ValueError(f"the model takes {height}x{width} images; bike needs a square input")
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    mode = cfg.get("resize_mode", "shortest")
    if mode not in RESIZE_MODES:
        raise ValueError(f"the model's resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")
    return ClipSpec(model_name=name, pretrained=pretrained, checkpoint_sha256=sha256, quick_gelu=quick_gelu,
                    image_size=int(height), mean=tuple(float(v) for v in visual.image_mean),
                    std=tuple(float(v) for v in visual.image_std),
                    embed_dim=int(open_clip.get_model_config(name)["embed_dim"]),
                    interpolation=str(cfg.get("interpolation", "bicubic")), resize_mode=mode)


def agreed_preprocess(name: str) -> dict[str, Any]:
    """The preprocess settings all pretrained tags of `name` agree on ({} if none): what a weights file or random
    init gets (SigLIP's mean/std 0.5 and squash, ...; where the tags disagree open_clip's defaults stay)."""
    cfgs = [open_clip.get_pretrained_cfg(name, tag) for tag in open_clip.list_pretrained_tags_by_model(name)]
    agreed = {}
    for key in PREPROCESS_KEYS:
        values = {tuple(c[key]) if isinstance(c.get(key), (list, tuple)) else c.get(key) for c in cfgs}
        if len(values) == 1 and None not in values:
            agreed[key] = next(iter(values))
    return agreed


def load_clip(model_name: str, pretrained: str = "none", *, quick_gelu: bool | None = None,
              device: str | torch.device = "cpu") -> tuple[nn.Module, ClipSpec]:
    """`model_name` with weights from `pretrained` (see the module docstring), in eval mode, and its `ClipSpec`."""
    name = resolve_model_name(model_name)
    device = torch.device(device)
    sha256 = None
    if pretrained.lower() == "none":
        recorded, use_quick_gelu = "none", _auto_quick_gelu(name, quick_gelu)
        with torch.random.fork_rng(devices=[]), _without_random_init_warning():  # asked for: no warning
            torch.default_generator.manual_seed(RANDOM_INIT_SEED)  # the caller's RNG state is kept
            model = _create(name, use_quick_gelu, device, preprocess=agreed_preprocess(name))
    elif open_clip.get_pretrained_cfg(name, pretrained):
        recorded = pretrained.lower().replace("-", "_")  # open_clip's normal form of a tag
        model, use_quick_gelu = _load_tag(name, recorded, quick_gelu, device)
    else:
        path = _existing_file(name, pretrained)
        recorded, sha256 = str(path.resolve()), file_sha256(path)
        if is_torchscript(path):
            use_quick_gelu = _required_quick_gelu(True, quick_gelu, f"the OpenAI TorchScript archive {path}")
            model = load_torchscript(name, path, device)
        else:
            use_quick_gelu = _auto_quick_gelu(name, quick_gelu)
            with _without_random_init_warning():  # weights follow at once
                model = _create(name, use_quick_gelu, device, preprocess=agreed_preprocess(name))
            load_state_dict_file(model, name, path)
    model.eval()
    with as_user_error(ValueError, error=ModelLoadError):  # an image tower bike cannot feed
        spec = make_spec(model, name, recorded, sha256, use_quick_gelu)
    log.info("Loaded %s (pretrained %s, QuickGELU %s, %d px input, %d-d embeddings)",
             name, recorded, "on" if use_quick_gelu else "off", spec.image_size, spec.embed_dim)
    return model, spec


def _auto_quick_gelu(name: str, requested: bool | None) -> bool:
    return requested if requested is not None else name.endswith("-quickgelu")


def _required_quick_gelu(required: bool, requested: bool | None, source: str) -> bool:
    if requested is not None and requested != required:
        raise ModelLoadError(f"{source} was trained {'with' if required else 'without'} QuickGELU; "
                             f"quick_gelu={requested} contradicts it (leave the QuickGELU option unset)")
    return required


@contextmanager
def _without_random_init_warning() -> Iterator[None]:
    """Drop open_clip's root-logger warning "Model initialized randomly" (misleading before a load)."""
    def drop(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _create(name: str, quick_gelu: bool, device: torch.device, checkpoint: str | None = None,
            preprocess: Mapping | None = None) -> nn.Module:
    """open_clip.create_model, with its errors (many types) turned into ModelLoadError."""
    try:
        # pretrained_hf=False: a Hugging Face text tower gets bike's weights (or random ones for 'none'),
        # never a download of the HF model's own weights that would be overwritten anyway
        return open_clip.create_model(name, pretrained=checkpoint, device=device, quick_gelu=quick_gelu,
                                      force_preprocess_cfg=dict(preprocess or {}), pretrained_hf=False)
    except Exception as e:
        package = missing_package(e)
        if package:
            raise ModelLoadError(f"{name}'s text tower needs the {package} package: {HF_EXTRA}") from e
        if hub_unreachable(e):
            raise ModelLoadError(f"cannot build {name}: the configuration of its Hugging Face text tower: {HUB_HINT}") from e
        weights = f" with the weights in {checkpoint}" if checkpoint else ""
        raise ModelLoadError(f"cannot build {name}{weights}: {e}") from e


def _load_tag(name: str, tag: str, quick_gelu: bool | None, device: torch.device) -> tuple[nn.Module, bool]:
    cfg = open_clip.get_pretrained_cfg(name, tag)
    use_quick_gelu = _required_quick_gelu(bool(cfg.get("quick_gelu", False)), quick_gelu, f"{name} {tag!r}")
    try:
        checkpoint = download_pretrained(cfg)
    except Exception as e:  # offline, hub and URL downloads fail with many error types
        reason = str(e).rstrip(".")
        raise ModelLoadError(f"cannot download the {tag!r} weights of {name}: {reason}. Without network access, "
                             "download the checkpoint elsewhere and pass the local file instead, e.g. "
                             f"--pretrained /path/to/{name}.pt") from e
    # The tag's preprocess config carries its mean/std (not OpenAI's for every tag).
    return _create(name, use_quick_gelu, device, checkpoint=checkpoint, preprocess=cfg), use_quick_gelu


def _existing_file(name: str, pretrained: str) -> Path:
    """`pretrained` as an existing file; otherwise the error for a missing file or an unknown tag."""
    path = Path(pretrained)
    if path.is_file():
        return path
    if path.exists():
        raise wrong_kind(path, CLIP_WEIGHTS, error=ModelLoadError)
    if "/" in pretrained or "\\" in pretrained or path.suffix:
        raise ModelLoadError(f"checkpoint file not found: {pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    known = f"known tags for {name}: {', '.join(tags)}" if tags else f"{name} has no pretrained tags"
    raise ModelLoadError(f"{pretrained!r} is neither a pretrained tag of {name} nor an existing file; {known} "
                         "(or 'none' for random weights, or the path of a checkpoint file)")


class HubUnreachable(OSError):
    """The hub cannot be reached and the weights are not in the local cache."""


def download_pretrained(cfg: dict) -> str:
    """The local path of a pretrained config's weights, the hub probed first by one TCP connection (offline the
    hub client retries each file for ~45 s): else the hub cache's copy or HubUnreachable (offline mode or a proxy:
    the client decides)."""
    hub = cfg.get("hf_hub", "")
    if hub and not (os.environ.get("HF_HUB_OFFLINE") or any(os.environ.get(v) for v in PROXY_VARIABLES)):
        endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)
        if not _reachable(endpoint):
            model_id, filename = os.path.split(hub)
            cached = _cached(model_id, filename or HF_WEIGHTS_NAME)
            if cached is None:
                raise HubUnreachable(f"{urlparse(endpoint).hostname} cannot be reached (no network?) and "
                                     f"{model_id} is not in the local Hugging Face cache")
            return cached
    return open_clip.download_pretrained(cfg)


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
    """open_clip's conversions, as `open_clip.factory.load_checkpoint` (which only takes a path): third-party and
    old text-tower layouts, 0-d vs 1-d logit scale, position embeddings of another size (resized)."""
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
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:_SHOW])}{', ...' if len(keys) > _SHOW else ''}"
                for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("shapes, checkpoint vs model", shapes)) if keys]
    if problems:
        raise ModelLoadError(f"{path} does not fit the {name} architecture (a checkpoint of another model?): "
                             + "; ".join(problems))


def recorded_clip(record: dict, source: object, pretrained: str | None,
                  device: str | torch.device = "cpu") -> tuple[nn.Module, ClipSpec]:
    """CLIP as a checkpoint `source` records it (`record`: a ClipSpec's fields); `pretrained` relocates its
    weights file, which must be the same file (sha256)."""
    recorded_sha = record.get("checkpoint_sha256")
    weights = record["pretrained"]
    if pretrained is not None:
        if recorded_sha is None:
            raise InputError(f"--pretrained relocates the CLIP weights file of a checkpoint, but {source} was "
                             f"trained from {weights!r}, which is not a file; leave --pretrained out")
        if not Path(pretrained).is_file():
            raise ModelLoadError(f"--pretrained {pretrained}: no such file")
        if file_sha256(pretrained) != recorded_sha:
            raise ModelLoadError(f"--pretrained {pretrained} is not the CLIP weights file {source} was trained "
                                 f"from (sha256 differs from the recorded {recorded_sha[:12]}...)")
        weights = pretrained
    elif recorded_sha is not None and not Path(weights).is_file():
        raise ModelLoadError(f"{source} was trained from the CLIP weights file {weights}, which no longer exists; "
                             "pass --pretrained PATH with the same file where it is now")
    clip_model, spec = load_clip(record["model_name"], weights, quick_gelu=record["quick_gelu"], device=device)
    if spec.embed_dim != record["embed_dim"]:
        raise ModelLoadError(f"{record['model_name']} now embeds in {spec.embed_dim} dimensions; {source} "
                             f"records {record['embed_dim']}")
    return clip_model, spec


def cache_clip(model: str | None, pretrained: str | None, quick_gelu: bool | None, cache: FeatureCache | None,
               *, what: str | None = None, allow_model_mismatch: bool = False,
               device: torch.device | str = "cpu") -> tuple[nn.Module, ClipSpec]:
    """CLIP as given (`model`, `pretrained`), else the cache's; the cache must come from it. `what` names
    it in a mismatch (default: its options)."""
    meta = cache.meta if cache is not None else None
    model_name = model or (meta.model_name if meta else None)
    pretrained = pretrained or (meta.pretrained if meta else None)
    if not model_name or not pretrained:
        raise InputError("without --checkpoint, give --model and --pretrained (zero-shot CLIP)")
    same_model = meta is not None and model_name == meta.model_name  # else open_clip's own choice
    quick = quick_gelu if quick_gelu is not None else (meta.quick_gelu if same_model else None)
    what = what or f"--model {model_name} --pretrained {pretrained}"
    if meta is not None:  # the name and width first: a mismatch is named before a large model loads
        check_same_model({"model_name": model_name, "embed_dim": configured_embed_dim(model_name)}, what, meta,
                         str(cache.path), allow_model_mismatch)
    clip_model, spec = load_clip(model_name, pretrained, quick_gelu=quick, device=device)
    if meta is not None:
        check_same_model(spec, what, meta, str(cache.path), allow_model_mismatch)
    return clip_model, spec


def visual_sha256(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Hex sha256 of the `visual.` tensors of a state dict (None when it has none)."""
    keys = sorted(k for k in state_dict if k.startswith(PREFIX))
    if not keys:
        return None
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key[len(PREFIX):].encode())
        digest.update(state_dict[key].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_visual_weights(checkpoint_sha: str | None, cache_sha: str | None, checkpoint: object, cache: object,
                         ignore: bool = False) -> None:
    """CacheMismatchError when a checkpoint's visual weights differ from those that made a cache (unless `ignore`
    or the checkpoint has none)."""
    if ignore or checkpoint_sha is None or checkpoint_sha == cache_sha:
        return
    made_by = (f"visual weights sha256 {cache_sha}" if cache_sha
               else "visual weights it does not record (made before bike recorded them)")
    raise CacheMismatchError(f"{checkpoint} holds its own visual encoder (visual weights sha256 {checkpoint_sha}), "
                             f"but {cache} was extracted by another one ({made_by}). Extract the features with the "
                             f"checkpoint's own weights (bike extract-features --pretrained {checkpoint} ...), or "
                             "pass --ignore-visual-weights to use this cache anyway")
