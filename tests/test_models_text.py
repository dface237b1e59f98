"""The category text side: per-token embeddings, class-name word masks, ClassTexts."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from bike_cli.config.stages import DEFAULT_TEMPLATE
from bike_cli.errors import ModelLoadError
from bike_cli.models.clip import load_clip
from bike_cli.models.heads import vcs_logits
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import (
    PromptError,
    class_name_spans,
    encode_class_texts,
    word_token_mask,
)
from bike_cli.models.text_towers import encode_text_tokens


def text_token_embeddings(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Per-token text embeddings [N, L, D] of `tokens` [N, L] (a test helper, once in bike_cli.models.text)."""
    return encode_text_tokens(model, tokens)[0]


NAMES = ["playing guitar", "video", "tai chi"]


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_clip("bike-tiny", "none")
    return model, get_tokenizer("bike-tiny")


def test_token_embeddings_at_pooled_position_equal_encode_text(tiny):
    model, tokenizer = tiny
    tokens = tokenizer([DEFAULT_TEMPLATE.format(n) for n in NAMES])
    with torch.no_grad():
        per_token = text_token_embeddings(model, tokens)
        expected = model.encode_text(tokens)
    assert per_token.shape == (3, 77, 64)
    pooled = text_global_pool(per_token, tokens, model.text_pool_type, eos_token_id=model.text_eos_id)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)


def test_token_embeddings_with_linear_text_projection(tiny):
    model, tokenizer = tiny
    tokens = tokenizer(["This is a video about juggling"])
    with_linear = copy.deepcopy(model)
    del with_linear.text_projection  # a Parameter slot; replaced by the equivalent nn.Linear
    with_linear.text_projection = torch.nn.Linear(64, 64, bias=False)
    with torch.no_grad():
        with_linear.text_projection.weight.copy_(model.text_projection.T)
        torch.testing.assert_close(text_token_embeddings(with_linear, tokens), text_token_embeddings(model, tokens),
                                   atol=1e-5, rtol=0)
        pooled = text_global_pool(text_token_embeddings(with_linear, tokens), tokens, "argmax")
        torch.testing.assert_close(pooled, with_linear.encode_text(tokens), atol=1e-5, rtol=0)


def test_model_without_text_transformer_is_refused():
    with pytest.raises(ModelLoadError, match="no built-in CLIP text transformer"):
        text_token_embeddings(torch.nn.Linear(2, 2), torch.zeros(1, 77, dtype=torch.long))


def test_spans_cover_exactly_the_class_name_tokens(tiny):
    _, tokenizer = tiny
    prefix = len(tokenizer.encode("This is a video about"))
    spans = class_name_spans(tokenizer, DEFAULT_TEMPLATE, NAMES)
    for (start, end), name in zip(spans, NAMES):
        assert start == 1 + prefix  # after SOT and the template's words
        assert end - start == len(tokenizer.encode(name))
    # "video" also occurs in the template: the class-name occurrence is the one after the prefix
    assert spans[1] == (1 + prefix, 2 + prefix)


def test_span_with_template_suffix(tiny):
    _, tokenizer = tiny
    (start, end), = class_name_spans(tokenizer, "a clip of {}, a sport.", ["rock climbing"])
    ids = tokenizer(["a clip of rock climbing, a sport."])[0].tolist()
    assert ids[start:end] == tokenizer.encode("rock climbing")
    assert start == 1 + len(tokenizer.encode("a clip of"))


def test_word_mask_excludes_sot_eot_padding_and_template(tiny):
    _, tokenizer = tiny
    tokens = tokenizer([DEFAULT_TEMPLATE.format("playing guitar")])
    mask = word_token_mask(tokens, [(6, 8)])
    assert mask.shape == (1, 77) and mask.dtype == torch.bool
    assert mask[0].nonzero().flatten().tolist() == [6, 7]
    eot = tokens[0].tolist().index(tokenizer.eot_token_id)
    assert not mask[0, 0] and not mask[0, eot] and not mask[0, eot + 1:].any()


def test_class_texts_words_hold_the_name_token_embeddings(tiny):
    model, tokenizer = tiny
    texts = encode_class_texts(model, tokenizer, NAMES)
    lengths = [len(tokenizer.encode(n)) for n in NAMES]
    assert texts.tokens.shape == (3, max(lengths), 64)
    assert texts.token_mask.sum(1).tolist() == lengths
    prompts = tokenizer([DEFAULT_TEMPLATE.format(n) for n in NAMES])
    with torch.no_grad():
        per_token = text_token_embeddings(model, prompts)
        pooled = model.encode_text(prompts)
    start = 1 + len(tokenizer.encode("This is a video about"))
    for k, n in enumerate(lengths):
        torch.testing.assert_close(texts.tokens[k, :n], per_token[k, start:start + n], atol=1e-5, rtol=0)
        assert not texts.tokens[k, n:].any()  # padding of M is zero and masked
    torch.testing.assert_close(texts.pooled, F.normalize(pooled, dim=-1), atol=1e-5, rtol=0)
    assert not texts.pooled.requires_grad and not texts.tokens.requires_grad


def test_several_templates_concatenate_queries_and_ensemble_pooled(tiny):
    model, tokenizer = tiny
    templates = (DEFAULT_TEMPLATE, "a clip of {}, a sport.")
    texts = encode_class_texts(model, tokenizer, NAMES, templates=templates)
    lengths = [len(tokenizer.encode(n)) for n in NAMES]
    assert texts.token_mask.sum(1).tolist() == [2 * n for n in lengths]
    with torch.no_grad():
        each = [F.normalize(model.encode_text(tokenizer([t.format(n) for n in NAMES])), dim=-1) for t in templates]
        second = text_token_embeddings(model, tokenizer(["a clip of tai chi, a sport."]))
    torch.testing.assert_close(texts.pooled, F.normalize(each[0] + each[1], dim=-1), atol=1e-5, rtol=0)
    start = 1 + len(tokenizer.encode("a clip of"))
    n = lengths[2]
    torch.testing.assert_close(texts.tokens[2, n:2 * n], second[0, start:start + n], atol=1e-5, rtol=0)


def test_all_tokens_keeps_every_position_and_changes_vcs(tiny):
    model, tokenizer = tiny
    words = encode_class_texts(model, tokenizer, NAMES, vcs_tokens="words")
    every = encode_class_texts(model, tokenizer, NAMES, vcs_tokens="all")
    assert every.tokens.shape == (3, 77, 64) and every.token_mask.all()
    torch.testing.assert_close(every.pooled, words.pooled)
    frames = torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(vcs_logits(frames, words), vcs_logits(frames, every), atol=1e-4)


def test_select_picks_rows_for_a_batch(tiny):
    model, tokenizer = tiny
    texts = encode_class_texts(model, tokenizer, NAMES)
    picked = texts.select(torch.tensor([2, 0, 2]))
    assert torch.equal(picked.pooled[0], texts.pooled[2]) and torch.equal(picked.tokens[1], texts.tokens[0])
    assert picked.token_mask.shape == (3, texts.token_mask.shape[1])


def test_batching_does_not_change_results(tiny):
    model, tokenizer = tiny
    whole = encode_class_texts(model, tokenizer, NAMES)
    batched = encode_class_texts(model, tokenizer, NAMES, batch_size=2)
    torch.testing.assert_close(whole.pooled, batched.pooled)
    torch.testing.assert_close(whole.tokens, batched.tokens)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vcs_tokens": "eot"}, "vcs_tokens"),
        ({"class_names": []}, "no class names"),
        ({"templates": ("no placeholder",)}, "exactly one"),
        ({"templates": ()}, "no prompt templates"),
        ({"class_names": ["ok", ""]}, "no tokens"),
        ({"class_names": ["long " * 80]}, "truncated"),
    ],
)
def test_bad_inputs_raise_prompt_error(tiny, kwargs, message):
    model, tokenizer = tiny
    args = {"class_names": NAMES, **kwargs}
    with pytest.raises(PromptError, match=message):
        encode_class_texts(model, tokenizer, **args)


def test_span_of_a_name_glued_to_the_template_covers_the_changed_tokens(tiny):
    _, tokenizer = tiny
    (start, end), = class_name_spans(tokenizer, "{}s", ["tai chi"])
    ids = tokenizer(["tai chis"])[0].tolist()
    assert (start, end) == (1, 1 + len(tokenizer.encode("tai chis")))
    assert tokenizer.decoder[ids[start]].startswith("tai")


def test_spans_with_a_tokenizer_without_start_or_end_tokens():
    vocab: dict[str, int] = {}

    def tokenizer(texts):  # one id per word, 1-based, zero padding, no SOT / EOT
        rows = [[vocab.setdefault(w, len(vocab) + 1) for w in t.split()] for t in texts]
        return torch.tensor([r + [0] * (16 - len(r)) for r in rows])

    spans = class_name_spans(tokenizer, "a video of {} today", ["playing guitar", "juggling"])
    assert spans == [(3, 5), (3, 4)]
    with pytest.raises(PromptError, match="no tokens"):
        class_name_spans(tokenizer, "a video of {} today", [""])
