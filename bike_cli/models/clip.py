"""Load an open_clip CLIP model from a pretrained tag, a local checkpoint file, or random init.

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
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.convert import convert_state_dict
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed
from safetensors.torch import load_file as load_safetensors
from torch import nn

from bike_cli.errors import ModelLoadError
from bike_cli.models import hub
from bike_cli.models.preprocess import PreprocessSpec, agreed_preprocess

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).with_name("configs")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")  # where training checkpoints keep the CLIP weights
_OPENAI_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # in OpenAI's archives, not weights
_SHOW = 5  # how many offending keys an error message names
RANDOM_INIT_SEED = 0  # 'none' is one fixed random init, so that runs (and resumed caches) agree


def register_configs() -> None:
    """Register bike's architectures (`configs/*.json`) with open_clip; a no-op once done."""
    names = {p.stem for p in CONFIG_DIR.glob("*.json")}
    if not names <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


register_configs()


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


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model_name(model_name: str) -> str:
    """The registered open_clip name (`ViT-B/32` -> `ViT-B-32`); ModelLoadError naming close names."""
    name = model_name.replace("/", "-")
    known = open_clip.list_models()
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"open_clip.list_models() lists all {len(known)}"
    raise ModelLoadError(f"unknown model architecture {model_name!r}; {hint}")


HF_EXTRA = "pip install 'bike-cli[hf]'"  # the optional packages Hugging Face towers and tokenizers need


def _missing_package(exc: BaseException) -> str | None:
    """The optional package an open_clip error says is missing (transformers, sentencepiece), if any."""
    text = f"{type(exc).__name__}: {exc}"
    for package in ("transformers", "sentencepiece", "tokenizers"):
        if package in text and (isinstance(exc, ImportError) or "pip install" in text):
            return package
    return None


def _hub_unreachable(exc: BaseException) -> bool:
    """Whether transformers / huggingface_hub failed to download files (no network, offline mode)."""
    text = str(exc).lower()
    return "couldn't connect" in text or "offline mode" in text or "cannot find the requested files" in text


HUB_HINT = ("it is downloaded from the Hugging Face hub on first use, and the hub cannot be reached from here: "
            "run once on a machine that can reach it (the files are cached in ~/.cache/huggingface)")


def get_tokenizer(model_name: str) -> Callable[[str | list[str]], torch.Tensor]:
    """open_clip's tokenizer for the architecture (bundled BPE for CLIP models: works offline).

    Hugging Face and SentencePiece tokenizers (SigLIP, roberta, mT5, ...) need `transformers` and
    are downloaded by it on first use; ModelLoadError when that is not possible."""
    name = resolve_model_name(model_name)
    try:
        return open_clip.get_tokenizer(name)
    except Exception as e:  # ImportError, OSError (offline hub), ValueError, ...
        package = _missing_package(e)
        if package:
            raise ModelLoadError(f"{name}'s tokenizer needs the {package} package: {HF_EXTRA}") from e
        if _hub_unreachable(e):
            raise ModelLoadError(f"cannot load the tokenizer of {name}: {HUB_HINT}") from e
        raise ModelLoadError(f"cannot load the tokenizer of {name} (downloaded from the Hugging Face hub on "
                             f"first use): {type(e).__name__}: {e}") from e


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
        if _is_torchscript(path):
            model, use_quick_gelu = _load_torchscript(name, path, quick_gelu, device)
        else:
            use_quick_gelu = _auto_quick_gelu(name, quick_gelu)
            with _without_random_init_warning():  # weights follow at once
                model = _create(name, use_quick_gelu, device, preprocess=agreed_preprocess(name))
            _load_state_dict_file(model, name, path)
    model.eval()
    spec = _make_spec(model, name, recorded, sha256, use_quick_gelu)
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
        package = _missing_package(e)
        if package:
            raise ModelLoadError(f"{name}'s text tower needs the {package} package: {HF_EXTRA}") from e
        if _hub_unreachable(e):
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
        raise ModelLoadError(f"pretrained checkpoint {pretrained} is not a file")
    if "/" in pretrained or "\\" in pretrained or path.suffix:
        raise ModelLoadError(f"checkpoint file not found: {pretrained}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    known = f"known tags for {name}: {', '.join(tags)}" if tags else f"{name} has no pretrained tags"
    raise ModelLoadError(
        f"{pretrained!r} is neither a pretrained tag of {name} nor an existing file; {known} "
        "(or 'none' for random weights, or the path of a checkpoint file)"
    )


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with `<name>/constants.pkl` (plain torch.save zips have none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in archive.namelist())
    except zipfile.BadZipFile:
        return False


def _load_torchscript(name: str, path: Path, quick_gelu: bool | None,
                      device: torch.device) -> tuple[nn.Module, bool]:
    _required_quick_gelu(True, quick_gelu, f"the OpenAI TorchScript archive {path}")
    try:
        model = open_clip.load_openai_model(str(path), precision="fp32", device=device)
    except Exception as e:
        raise ModelLoadError(f"cannot load the TorchScript archive {path}: {e}") from e
    try:  # the named architecture's shapes, built on the meta device (no memory, no init)
        with torch.device("meta"):
            reference = open_clip.CLIP(**open_clip.get_model_config(name))
    except Exception as e:
        raise ModelLoadError(f"{path} is an OpenAI TorchScript archive; {name} is no standard CLIP: {e}") from e
    _check_fits(reference.state_dict(), model.state_dict(), path, name)
    return model, True


def _load_state_dict_file(model: nn.Module, name: str, path: Path) -> None:
    state = _read_state_dict(path)
    try:
        state = _fit_to_model(model, state)
    except Exception as e:  # resizing position embeddings of another architecture fails
        _check_fits(model.state_dict(), state, path, name)  # names the keys that do not fit
        raise ModelLoadError(f"{path} does not fit the {name} architecture: {e}") from e
    _check_fits(model.state_dict(), state, path, name)
    model.load_state_dict(state)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from training-checkpoint nesting and `module.`."""
    try:
        if path.suffix == ".safetensors":
            obj = load_safetensors(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler" in ln), "")
        raise ModelLoadError(
            f"refusing {path}: it holds pickled objects other than tensors, and bike loads checkpoints "
            f"with weights_only=True so that no code from the file runs. {detail}"
        ) from e
    except Exception as e:  # torch.load reports a non-checkpoint as EOFError, KeyError, RuntimeError...
        raise ModelLoadError(
            f"{path} is not a checkpoint bike can read (torch.save state dict, .safetensors or OpenAI "
            f"TorchScript archive): {type(e).__name__}: {e}"
        ) from e
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


def _fit_to_model(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def _check_fits(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: Path,
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


def _make_spec(model: nn.Module, name: str, pretrained: str, sha256: str | None, quick_gelu: bool) -> ClipSpec:
    pre = PreprocessSpec.from_model(model.visual)
    return ClipSpec(
        model_name=name,
        pretrained=pretrained,
        checkpoint_sha256=sha256,
        quick_gelu=quick_gelu,
        image_size=pre.image_size,
        mean=pre.mean,
        std=pre.std,
        embed_dim=int(open_clip.get_model_config(name)["embed_dim"]),
        interpolation=pre.interpolation,
        resize_mode=pre.resize_mode,
    )
