"""A tiny Hugging Face text tower (BERT config and word-level tokenizer written here, no download):
pooled == encode_text, word spans, padding, and extract -> eval -> train-video through the CLI.
Skipped where transformers is not installed (pip install 'bike-cli[hf]')."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'bike-cli[hf]')")

import open_clip  # noqa: E402

from bike_cli.cli.app import app  # noqa: E402
from bike_cli.config.stages import DEFAULT_TEMPLATE
from bike_cli.models.clip import load_clip
from bike_cli.models.registry import get_tokenizer  # noqa: E402
from bike_cli.models.text import encode_class_texts, padding_free_mask
from bike_cli.models.text_towers import encode_text_tokens, text_tower_kind  # noqa: E402

NAME = "bike-tiny-hf-test"
WORDS = "this is a video about playing guitar tai chi square circle moving left right up down".split()


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """Registers NAME: bike-tiny's image tower with a 1-layer BERT text tower from a local folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("hf")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                            sep_token="[SEP]").save_pretrained(root)
    BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=32, pad_token_id=0).save_pretrained(root)
    cfg = {"embed_dim": 64,
           "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
           "text_cfg": {"hf_model_name": str(root), "hf_tokenizer_name": str(root), "hf_model_pretrained": False,
                        "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler", "context_length": 16}}
    (root / f"{NAME}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / f"{NAME}.json")
    model, _ = load_clip(NAME, "none")
    return model, get_tokenizer(NAME)


def test_hf_tower_pooled_equals_encode_text_and_tokens_are_projected(hf_model):
    model, tokenizer = hf_model
    assert text_tower_kind(model) == "hf"
    tokens = tokenizer([DEFAULT_TEMPLATE.format(n) for n in ("playing guitar", "tai chi")])  # [2, 16]
    with torch.no_grad():
        per_token, pooled = encode_text_tokens(model, tokens)
        expected = model.encode_text(tokens)
    assert per_token.shape == (2, 16, 64)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)
    real = (tokens != 0).unsqueeze(-1)  # mean pooler, linear projection: pooled = mean of the real rows
    torch.testing.assert_close((per_token * real).sum(1) / real.sum(1), pooled, atol=1e-5, rtol=0)


def test_hf_word_spans_and_padding(hf_model):
    model, tokenizer = hf_model
    texts = encode_class_texts(model, tokenizer, ["playing guitar", "tai chi", "square"])
    assert texts.token_mask.sum(1).tolist() == [2, 2, 1]
    tokens = tokenizer(["This is a video about playing guitar"])
    with torch.no_grad():
        per_token, pooled = encode_text_tokens(model, tokens)
    torch.testing.assert_close(texts.tokens[0, :2], per_token[0, 6:8], atol=1e-5, rtol=0)  # after [CLS] + 5 words
    torch.testing.assert_close(texts.pooled[0], F.normalize(pooled[0], dim=-1), atol=1e-5, rtol=0)
    assert padding_free_mask(tokenizer, tokens).sum().item() == 9  # [CLS], 7 words, [SEP]; no [PAD]
    every = encode_class_texts(model, tokenizer, ["playing guitar"], vcs_tokens="all")
    assert every.token_mask.sum().item() == 9


def test_hf_tower_through_the_cli(hf_model, tmp_path, sample_data):
    runner = CliRunner()
    cache = tmp_path / "train.h5"
    steps = [
        ["extract-features", "--list", str(sample_data.train), "--classes", str(sample_data.classes), "--out",
         str(cache), "--frames", "4", "--workers", "0", "--model", NAME],
        ["eval", "--features", str(cache), "--out", str(tmp_path / "eval"), "--head", "vcs", "--frames", "4",
         "--workers", "0"],
        ["train-video", "--features", str(cache), "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size",
         "4", "--workers", "0", "--head", "vcs", "--temporal", "transformer", "--temporal-layers", "1",
         "--frames", "4"],
    ]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "last.pt").is_file()
