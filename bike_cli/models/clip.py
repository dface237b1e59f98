"""Load an open_clip CLIP model from a pretrained tag, a local checkpoint file, or random init.

(Names and tokenizers: `bike_cli.models.registry`; reading weight files: `bike_cli.models.weights`;
what is recorded of the model: `bike_cli.models.clip_spec.ClipSpec`.)

`load_clip(model_name, pretrained)` takes any open_clip architecture name (`open_clip.list_models()`,
plus bike's own tiny test architecture `bike-tiny`, registered from `configs/` on import) and for
`pretrained` one of:

- a pretrained tag of that architecture (`open_clip.list_pretrained_tags_by_model`), downloaded by
  open_clip (needs network access; offline, pass the file instead);
- a local checkpoint file: a state dict saved with `torch.save` (OpenAI / open_clip key names, also
  nested under `state_dict`, `model_state_dict` or `model`, also with DDP's `module.` prefix), a
  `.safetensors` file, or an OpenAI TorchScript archive (e.g. OpenAI's `ViT-B-16.pt`);
- `none`: random initialisation, always the same one (seed `RANDOM_INIT_SEED`, on the CPU
  generator, without touching the caller's RNG state), so that separate runs agree.

Files are read without running code from them: `torch.load(weights_only=True)` or safetensors.
TorchScript archives go through `open_clip.load_openai_model`, i.e. `torch.jit.load`, which runs
the archive's TorchScript (not arbitrary Python) as OpenAI's own loader does.

QuickGELU. OpenAI's weights (and some others) were trained with QuickGELU; run with exact GELU they
give silently worse features. open_clip 3.3 does not switch it on for a tag (it only warns on a
mismatch), so bike chooses the activation:

- pretrained tag: what open_clip records for the tag (`quick_gelu` in its pretrained config, True
  for `openai`);
- OpenAI TorchScript archive: always on (`load_openai_model` builds it so);
- state-dict file or `none`: the `quick_gelu` argument; `None` (auto) means on only for names that
  end in `-quickgelu`. A state-dict file does not record its activation: pass `quick_gelu=True` for
  OpenAI weights saved as a plain state dict.

Preprocessing (mean/std, resize mode): a tag's own; for a state-dict file or `none`, what all the
architecture's tags agree on (`bike_cli.models.preprocess.agreed_preprocess`).

An explicit `quick_gelu` that contradicts what a tag or TorchScript archive needs is an error.

CLIP as something bike wrote records it: `recorded_clip` (a checkpoint's record, its weights file
relocated by sha256) and `cache_clip` (the given model or a feature cache's, checked against the cache).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
from torch import nn

from bike_cli.errors import InputError, ModelLoadError, as_user_error
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.file_kind import wrong_kind
from bike_cli.io.identity import check_same_model, file_sha256
from bike_cli.models import hub
from bike_cli.models.clip_spec import ClipSpec, make_spec
from bike_cli.models.preprocess import agreed_preprocess
from bike_cli.models.registry import (
    HF_EXTRA,
    HUB_HINT,
    configured_embed_dim,
    hub_unreachable,
    missing_package,
    resolve_model_name,
)
from bike_cli.models.weights import CLIP_WEIGHTS, is_torchscript, load_state_dict_file, load_torchscript

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0  # 'none' is one fixed random init, so that runs (and resumed caches) agree


def load_clip(
    model_name: str,
    pretrained: str = "none",
    *,
    quick_gelu: bool | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, ClipSpec]:
    """Build `model_name` with weights from `pretrained` (see the module docstring), in eval mode.

    Returns the open_clip model (a `CLIP` for standard architectures) and its `ClipSpec`.
    """
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
        raise ModelLoadError(
            f"{source} was trained {'with' if required else 'without'} QuickGELU; quick_gelu={requested} "
            "contradicts it (leave the QuickGELU option unset)"
        )
    return required


class _RandomInitWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _without_random_init_warning() -> Iterator[None]:
    """Drop open_clip's root-logger warning "Model initialized randomly" (misleading before a load)."""
    root, drop = logging.getLogger(), _RandomInitWarningFilter()
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
        checkpoint = hub.download_pretrained(cfg)
    except Exception as e:  # offline, hub and URL downloads fail with many error types
        reason = str(e).rstrip(".")
        raise ModelLoadError(
            f"cannot download the {tag!r} weights of {name}: {reason}. Without network access, download the "
            f"checkpoint elsewhere and pass the local file instead, e.g. --pretrained /path/to/{name}.pt"
        ) from e
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
    raise ModelLoadError(
        f"{pretrained!r} is neither a pretrained tag of {name} nor an existing file; {known} "
        "(or 'none' for random weights, or the path of a checkpoint file)"
    )


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
