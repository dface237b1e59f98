"""Text towers of every open_clip kind: pooled == encode_text, per-token projection, VCS word spans,
the OpenAI-CLIP path unchanged, and the message for a missing optional package."""

from __future__ import annotations

import importlib.util

import open_clip
import pytest
import torch
import torch.nn.functional as F

from bike_cli.config.stages import DEFAULT_TEMPLATE
from bike_cli.errors import ModelLoadError
from bike_cli.models.clip import load_clip
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import class_name_spans, encode_class_texts, padding_free_mask
from bike_cli.models.text_towers import encode_text_tokens, text_tower_kind, text_width

NAMES = ["playing guitar", "tai chi", "rock climbing indoors"]
ROUND_OFF = {"atol": 1e-6, "rtol": 1e-5}  # float32 round-off: another batching or thread count moves the last bits
KINDS = {"bike-tiny": "clip", "bike-tiny-text": "transformer", "bike-tiny-bidir": "transformer",
         "bike-tiny-coca": "coca"}


@pytest.fixture(scope="module", params=list(KINDS))
def tiny(request):
    model, _ = load_clip(request.param, "none")
    return request.param, model, get_tokenizer(request.param)


def _prompts(tokenizer, template=DEFAULT_TEMPLATE):
    return tokenizer([template.format(n) for n in NAMES])


def test_kind_is_read_from_the_model(tiny):
    name, model, _ = tiny
    assert text_tower_kind(model) == KINDS[name]
    assert text_width(model) == 64


def test_pooled_equals_the_models_own_encode_text(tiny):
    _, model, tokenizer = tiny
    tokens = _prompts(tokenizer)
    with torch.no_grad():
        per_token, pooled = encode_text_tokens(model, tokens)
        expected = model.encode_text(tokens, normalize=False)
    assert per_token.shape == (3, tokens.shape[1], 64)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)


def _projected_reference(model, tokens):
    """Per-token embeddings by open_clip's own tower (output_tokens), through LN and projection."""
    text, before = model.text, model.text.output_tokens
    text.output_tokens = True
    try:
        _, hidden = text(tokens)  # [N, L, W]: after ln_final, except CoCa's (LN is applied after pooling)
    finally:
        text.output_tokens = before
    if text.cls_emb is not None:
        hidden = text.ln_final(hidden)
    projection = text.text_projection
    return projection(hidden) if isinstance(projection, torch.nn.Linear) else hidden @ projection


@pytest.mark.parametrize("name", ["bike-tiny-text", "bike-tiny-bidir", "bike-tiny-coca"])
def test_per_token_rows_are_projected_like_the_pooled_one(name):
    model, _ = load_clip(name, "none")
    tokens = _prompts(get_tokenizer(name))
    with torch.no_grad():
        per_token, pooled = encode_text_tokens(model, tokens)
        torch.testing.assert_close(per_token, _projected_reference(model, tokens), atol=1e-5, rtol=0)
    if name == "bike-tiny-text":  # argmax pooling: the pooled row is the EOT row
        eot = tokens.argmax(-1)
        torch.testing.assert_close(per_token[torch.arange(3), eot], pooled, atol=1e-6, rtol=0)


def test_bidirectional_last_pool_tower_has_linear_projection_and_no_causal_mask():
    model, _ = load_clip("bike-tiny-bidir", "none")
    assert isinstance(model.text.text_projection, torch.nn.Linear) and model.text.attn_mask is None
    assert model.text.pool_type == "last" and model.logit_bias is not None
    tokens = _prompts(get_tokenizer("bike-tiny-bidir"))
    with torch.no_grad():
        per_token, pooled = encode_text_tokens(model, tokens)
    torch.testing.assert_close(per_token[:, -1], pooled, atol=1e-6, rtol=0)  # last position, padding included


def test_word_tokens_of_multi_word_names_in_every_tower(tiny):
    _, model, tokenizer = tiny
    texts = encode_class_texts(model, tokenizer, NAMES)
    lengths = [len(tokenizer.encode(n)) for n in NAMES]
    assert texts.token_mask.sum(1).tolist() == lengths
    tokens = _prompts(tokenizer)
    with torch.no_grad():
        per_token, pooled = encode_text_tokens(model, tokens)
    start = 1 + len(tokenizer.encode("This is a video about"))
    for k, n in enumerate(lengths):
        torch.testing.assert_close(texts.tokens[k, :n], per_token[k, start:start + n], atol=1e-5, rtol=0)
    torch.testing.assert_close(texts.pooled, F.normalize(pooled, dim=-1), atol=1e-5, rtol=0)


def test_openai_clip_path_gives_the_numbers_of_clips_formulas():
    """bike-tiny (the CLIP class): the per-token rows of CLIP's own encode_text formula, to float32 round-off
    (another batching of the same products: BLAS blocking and thread counts move the last bits)."""
    model, _ = load_clip("bike-tiny", "none")
    tokenizer = get_tokenizer("bike-tiny")
    tokens = _prompts(tokenizer)
    with torch.no_grad():
        x = model.token_embedding(tokens) + model.positional_embedding
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        expected = x @ model.text_projection  # [N, L, D]
        texts = encode_class_texts(model, tokenizer, NAMES)
        every = encode_class_texts(model, tokenizer, NAMES, vcs_tokens="all")
    eot = tokens.argmax(-1)
    torch.testing.assert_close(texts.pooled, F.normalize(expected[torch.arange(3), eot], dim=-1), **ROUND_OFF)
    start = 1 + len(tokenizer.encode("This is a video about"))
    for k, name in enumerate(NAMES):
        n = len(tokenizer.encode(name))
        torch.testing.assert_close(texts.tokens[k, :n], expected[k, start:start + n], **ROUND_OFF)
    assert every.token_mask.all() and every.tokens.shape == (3, 77, 64)  # CLIP's BPE: all 77 positions
    torch.testing.assert_close(every.tokens, expected, **ROUND_OFF)


class _PaddingTokenizer:
    """A word-level tokenizer that pads with a pad token, like open_clip's HFTokenizer."""

    def __init__(self, context: int = 16, pad: int = 1, eos: int = 2) -> None:
        self.tokenizer = type("Inner", (), {"pad_token_id": pad, "eos_token_id": eos})()
        self.context, self.vocab, self.pad, self.eos = context, {}, pad, eos

    def __call__(self, texts, context_length=None):
        n = context_length or self.context
        words = [[self.vocab.setdefault(w, 10 + len(self.vocab)) for w in t.split()][: n - 1] for t in texts]
        return torch.tensor([r + [self.eos] + [self.pad] * (n - 1 - len(r)) for r in words])


def test_all_tokens_drop_the_padding_of_a_tokenizer_that_pads():
    tokenizer = _PaddingTokenizer()
    tokens = tokenizer(["a video of juggling", "a video of tai chi"])
    mask = padding_free_mask(tokenizer, tokens)
    assert mask.sum(1).tolist() == [5, 6]  # the words and the end-of-text, not the pads
    assert class_name_spans(tokenizer, "a video of {}", ["juggling", "tai chi"]) == [(3, 4), (3, 5)]


def test_pad_equal_to_end_of_text_keeps_the_end_of_text():
    tokenizer = _PaddingTokenizer(pad=2, eos=2)  # T5-style SigLIP vocabularies pad with the EOS id
    tokens = tokenizer(["a b c"])
    assert padding_free_mask(tokenizer, tokens).sum().item() == 4


def test_missing_transformers_names_the_extra(monkeypatch):
    import open_clip.hf_model as hf_model

    monkeypatch.setattr(hf_model, "transformers", None)  # as where transformers is not installed
    with pytest.raises(ModelLoadError, match=r"pip install 'bike-cli\[hf\]'"):
        load_clip("roberta-ViT-B-32", "none")
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    with pytest.raises(ModelLoadError, match=r"transformers package: pip install 'bike-cli\[hf\]'"):
        get_tokenizer("ViT-B-16-SigLIP2")


HAVE_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


@pytest.mark.skipif(not HAVE_TRANSFORMERS, reason="transformers is not installed (pip install 'bike-cli[hf]')")
def test_hf_text_tower_from_a_local_config(tmp_path):
    from transformers import BertConfig

    from bike_cli.models.text_towers import CLIP_TEXT_PARTS  # noqa: F401 - module imports with transformers

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, pad_token_id=0)
    torch.manual_seed(0)
    text = open_clip.hf_model.HFTextEncoder("unused", output_dim=16, config=config, pooler_type="mean_pooler",
                                            proj_type="linear").eval()  # no dropout
    model = torch.nn.Module()
    model.text = text
    tokens = torch.tensor([[5, 6, 7, 2, 0, 0], [8, 9, 2, 0, 0, 0]])
    with torch.no_grad():
        per_token, pooled = encode_text_tokens(model, tokens)
        expected = text(tokens)
    assert text_tower_kind(model) == "hf" and per_token.shape == (2, 6, 16)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)
    real = (tokens != 0).unsqueeze(-1)  # mean pooler + linear projection: pooled = mean of the real rows
    torch.testing.assert_close((per_token * real).sum(1) / real.sum(1), pooled, atol=1e-5, rtol=0)


def test_zero_shot_scores_are_the_models_own_softmax_with_scale_above_100_and_a_bias(tmp_path, monkeypatch):
    """SigLIP-like model (logit_bias, learned scale above CLIP's cap): bike's zero-shot probabilities
    for one frame equal the softmax over classes of the model's own get_logits."""
    from bike_cli.models import clip as clip_module
    from bike_cli.models.factory import load_video_branch

    def raised_scale(*args, **kwargs):
        model, spec = load_clip(*args, **kwargs)
        with torch.no_grad():
            model.logit_scale.fill_(float(torch.log(torch.tensor(120.0))))
        return model, spec

    monkeypatch.setattr(clip_module, "load_clip", raised_scale)
    vm = load_video_branch(None, class_names=NAMES, model="bike-tiny-bidir", pretrained="none", head="mean",
                           templates=["{}"], device=torch.device("cpu"))
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        frames = vm.clip.encode_image(pixels).view(2, 1, 1, -1)  # [b, V, T, D]
        probs = vm.branch.class_probabilities(frames, vm.texts)
        image_logits, _ = vm.clip.get_logits(pixels, get_tokenizer("bike-tiny-bidir")(NAMES))
    assert vm.clip.logit_bias is not None and vm.branch.logit_scale().exp() > 119
    torch.testing.assert_close(probs, image_logits.softmax(-1), atol=1e-5, rtol=0)


def test_attributes_text_tower_copy_encodes_like_the_model_and_trains_apart(tiny):
    from bike_cli.models.attrs_branch import TextTower

    _, model, tokenizer = tiny
    tower = TextTower(model)
    tokens = _prompts(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(tower(tokens), model.encode_text(tokens, normalize=False), atol=1e-5, rtol=0)
    first = next(tower.parameters())
    assert all(first is not p for p in model.parameters())  # a deep copy: fine-tuning leaves the model alone


def test_unreachable_hub_is_one_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the hub to load the files, and couldn't find them in the cached files.")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    with pytest.raises(ModelLoadError, match="cannot be reached from here: run once on a machine"):
        get_tokenizer("ViT-B-16-SigLIP2")
