"""Tests for bike_cli.models.clip: model names, pretrained tags, local checkpoints, QuickGELU."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from bike_cli.errors import ModelLoadError
from bike_cli.io.identity import file_sha256
from bike_cli.models import clip as clip_module
from bike_cli.models.clip import ClipSpec, load_clip
from bike_cli.models.registry import get_tokenizer

TINY = "bike-tiny"
IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # [2, 3, 64, 64]


class NotATensor:
    """An arbitrary object: a pickle of it must not be loaded."""

    def __init__(self) -> None:
        self.payload = "anything"


def _source_model() -> open_clip.CLIP:
    """A freshly, randomly initialised bike-tiny in eval mode."""
    return open_clip.create_model(TINY).eval()


def _embed(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_image(IMAGES)  # [2, 64]


def _uses_quick_gelu(model: torch.nn.Module) -> bool:
    return any(isinstance(m, QuickGELU) for m in model.modules())


def test_random_init_encodes_images_to_embed_dim() -> None:
    model, spec = load_clip(TINY, "none")
    assert not model.training
    assert _embed(model).shape == (2, 64)
    assert spec == ClipSpec(
        model_name=TINY, pretrained="none", checkpoint_sha256=None, quick_gelu=False, image_size=64,
        mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD, embed_dim=64,
    )
    assert not _uses_quick_gelu(model)


def test_random_init_is_the_same_each_time_and_leaves_rng_alone() -> None:
    torch.manual_seed(123)
    first, _ = load_clip(TINY, "none")
    after_load = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after_load, torch.rand(3))
    second, _ = load_clip(TINY, "none")
    assert torch.equal(_embed(first), _embed(second))
    assert not torch.allclose(_embed(first), _embed(_source_model()))  # a different random init differs


def test_quick_gelu_argument_switches_activation_for_random_init() -> None:
    model, spec = load_clip(TINY, "none", quick_gelu=True)
    assert spec.quick_gelu and _uses_quick_gelu(model)


def test_quickgelu_name_turns_it_on_unless_forced_off() -> None:
    # Real architectures, but only their config is used (meta device: no memory, no init).
    with torch.device("meta"):
        _, auto = load_clip("ViT-B-32-quickgelu", "none", device="meta")
        model, off = load_clip("ViT-B-32-quickgelu", "none", quick_gelu=False, device="meta")
    assert auto.quick_gelu and not off.quick_gelu
    assert not _uses_quick_gelu(model)


def test_openai_key_names_equal_open_clip_names() -> None:
    keys = set(_source_model().state_dict())
    openai_names = {  # as in OpenAI's CLIP `model.state_dict()`
        "visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.proj",
        "visual.transformer.resblocks.0.attn.in_proj_weight", "visual.transformer.resblocks.0.mlp.c_fc.weight",
        "token_embedding.weight", "positional_embedding", "transformer.resblocks.1.ln_2.bias",
        "ln_final.weight", "text_projection", "logit_scale",
    }
    assert openai_names <= keys


@pytest.mark.parametrize("wrap", ["plain", "module_prefix", "model_state_dict", "state_dict_and_module"])
def test_state_dict_file_reproduces_source_model(tmp_path: Path, wrap: str) -> None:
    source = _source_model()
    state = source.state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items()}
    payload = {
        "plain": state,
        "module_prefix": prefixed,
        "model_state_dict": {"epoch": 3, "model_state_dict": state, "fusion_model_state_dict": {}},
        "state_dict_and_module": {"state_dict": prefixed},
    }[wrap]
    path = tmp_path / "tiny.pt"
    torch.save(payload, path)
    model, spec = load_clip(TINY, str(path))
    assert torch.allclose(_embed(model), _embed(source), atol=1e-6)
    assert spec.pretrained == str(path)
    assert spec.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert spec.quick_gelu is False


def test_safetensors_round_trip(tmp_path: Path) -> None:
    source = _source_model()
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model, spec = load_clip(TINY, str(path))
    assert torch.allclose(_embed(model), _embed(source), atol=1e-6)
    assert spec.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_sha256_matches_hashlib_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = torch.randint(0, 256, ((3 << 20) + 7,), dtype=torch.uint8).numpy().tobytes()  # > 3 blocks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == file_sha256(path)


def test_wrong_architecture_names_file_and_shapes(tmp_path: Path) -> None:
    other = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 64, "layers": 2, "width": 32, "patch_size": 16, "head_width": 32},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 2},
    )
    path = tmp_path / "other.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(ModelLoadError, match="shapes") as err:
        load_clip(TINY, str(path))
    assert str(path) in str(err.value) and TINY in str(err.value)


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = _source_model().state_dict()
    del state["ln_final.weight"]
    state["prompt_learner.ctx"] = torch.zeros(4)
    path = tmp_path / "keys.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError) as err:
        load_clip(TINY, str(path))
    message = str(err.value)
    assert str(path) in message and "ln_final.weight" in message and "prompt_learner.ctx" in message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "absent.pt"
    with pytest.raises(ModelLoadError, match="not found") as err:
        load_clip(TINY, str(path))
    assert str(path) in str(err.value)


def test_file_that_is_no_checkpoint_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(ModelLoadError, match="a text file starting 'hello', not CLIP weights") as err:
        load_clip(TINY, str(path))
    assert str(path) in str(err.value)


def test_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": NotATensor()}, path)
    with pytest.raises(ModelLoadError, match="no code from a file runs") as err:
        load_clip(TINY, str(path))
    assert str(path) in str(err.value) and "NotATensor" in str(err.value)
    assert "weights_only" not in str(err.value)  # torch's advice to load it unsafely is not passed on


@pytest.mark.parametrize(("typo", "expected"), [("ViT-B-23", "ViT-B-32"), ("bike-tyni", TINY)])
def test_unknown_model_name_suggests_close_names(typo: str, expected: str) -> None:
    with pytest.raises(ModelLoadError, match="unknown model") as err:
        load_clip(typo, "none")
    assert expected in str(err.value)


def test_unknown_tag_lists_known_tags() -> None:
    with pytest.raises(ModelLoadError) as err:
        load_clip("ViT-B-32", "opena1")
    message = str(err.value)
    assert "'opena1'" in message and "openai" in message and "laion2b_s34b_b79k" in message


def test_failed_download_says_how_to_pass_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    requested = []

    def offline(cfg: dict, *args: object, **kwargs: object) -> str:
        requested.append(cfg)
        raise FileNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)  # the real one retries ~45 s offline
    monkeypatch.setattr(clip_module, "_reachable", lambda endpoint: True)  # the hub client's own failure
    with pytest.raises(ModelLoadError, match="--pretrained /path/to/ViT-B-32.pt") as err:
        load_clip("ViT-B-32", "openai")
    assert "locate the file on the Hub" in str(err.value)
    assert requested == [open_clip.get_pretrained_cfg("ViT-B-32", "openai")]


def test_openai_tag_with_quick_gelu_off_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(cfg: dict, *args: object, **kwargs: object) -> str:
        raise AssertionError("the activation must be checked before downloading")

    monkeypatch.setattr(open_clip, "download_pretrained", no_download)
    with pytest.raises(ModelLoadError, match="QuickGELU"):
        load_clip("ViT-B-32", "openai", quick_gelu=False)


def test_tag_uses_its_quick_gelu_and_preprocessing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _source_model()
    path = tmp_path / "downloaded.pt"
    torch.save(source.state_dict(), path)
    fake_cfg = {"hf_hub": "org/bike-tiny/", "quick_gelu": True, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    real_cfg = open_clip.get_pretrained_cfg
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda name, tag: fake_cfg if (name, tag) == (TINY, "fake") else real_cfg(name, tag))
    monkeypatch.setattr(open_clip, "download_pretrained", lambda cfg, *a, **k: str(path))
    monkeypatch.setattr(clip_module, "_reachable", lambda endpoint: True)
    model, spec = load_clip(TINY, "fake")
    assert spec.quick_gelu and _uses_quick_gelu(model)
    assert (spec.pretrained, spec.checkpoint_sha256) == ("fake", None)
    assert (spec.mean, spec.std) == (fake_cfg["mean"], fake_cfg["std"])
    assert torch.equal(model.visual.conv1.weight, source.visual.conv1.weight)


@pytest.fixture(scope="module")
def openai_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A TorchScript archive in OpenAI's layout with bike-tiny's shapes, and the model traced into it.

    OpenAI's loader infers heads = width // 64, so the source has 1 head per tower (bike-tiny: 2);
    its attention mask is a plain attribute, as in OpenAI's models, not a state-dict buffer.
    """
    source = open_clip.CLIP(
        embed_dim=64, quick_gelu=True,
        vision_cfg={"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 64},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    ).eval()
    with torch.no_grad():
        for param in source.parameters():  # OpenAI's loader passes weights through fp16: make that exact
            param.copy_(param.half().float())
    mask = source.attn_mask
    del source._buffers["attn_mask"]
    source.attn_mask = mask
    path = tmp_path_factory.mktemp("openai") / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.14
        torch.jit.trace(source, (IMAGES, get_tokenizer(TINY)(["a cat", "a dog"])), check_trace=False).save(path)
    return path, source


def test_openai_torchscript_archive_loads_with_quick_gelu(openai_archive: tuple[Path, torch.nn.Module]) -> None:
    path, source = openai_archive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, spec = load_clip(TINY, str(path))
    assert torch.allclose(_embed(model), _embed(source), atol=1e-5)
    assert spec.quick_gelu and _uses_quick_gelu(model) and not model.training
    assert spec.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_torchscript_archive_is_routed_to_load_openai_model(openai_archive: tuple[Path, torch.nn.Module],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = openai_archive
    calls = []
    real_load_openai_model = open_clip.load_openai_model

    def spy(name: str, **kwargs: object) -> torch.nn.Module:
        calls.append((name, kwargs))
        return real_load_openai_model(name, **kwargs)

    monkeypatch.setattr(open_clip, "load_openai_model", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_clip(TINY, str(path))
    assert calls == [(str(path), {"precision": "fp32", "device": torch.device("cpu")})]


def test_torchscript_archive_of_another_architecture_is_refused(
    openai_archive: tuple[Path, torch.nn.Module],
) -> None:
    path, _ = openai_archive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelLoadError, match="does not fit") as err:
            load_clip("ViT-B-32", str(path))
    assert str(path) in str(err.value) and "visual.proj (64, 64) vs (768, 512)" in str(err.value)


def test_torchscript_archive_with_quick_gelu_off_is_refused(openai_archive: tuple[Path, torch.nn.Module]) -> None:
    path, _ = openai_archive
    with pytest.raises(ModelLoadError, match="QuickGELU"):
        load_clip(TINY, str(path), quick_gelu=False)


def test_tokenizer_for_tiny_model_works_offline() -> None:
    tokens = get_tokenizer(TINY)(["a video of a cat", "dog"])  # [2, 77]
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    assert torch.equal(tokens, open_clip.get_tokenizer(TINY)(["a video of a cat", "dog"]))
    assert torch.equal(tokens, open_clip.get_tokenizer("ViT-B-32")(["a video of a cat", "dog"]))
    with pytest.raises(ModelLoadError):
        get_tokenizer("bike-tyni")
