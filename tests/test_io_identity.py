"""The model identity check where two files meet (bike_cli.io.identity): every field it compares refuses
a difference, naming the field and both values; fields one side does not record are not compared."""

from __future__ import annotations

import logging

import pytest

from bike_cli.errors import CacheMismatchError
from bike_cli.io.identity import FIELDS, check_same_model
from bike_cli.models.clip import ClipSpec

RECORD = {"compat": "bike", "model_name": "ViT-B-32", "pretrained": "openai", "checkpoint_sha256": None,
          "quick_gelu": True, "embed_dim": 512, "image_size": 224}

CHANGES = {  # field -> (the record's keys changed, the values shown)
    "compat": ({"compat": "authors"}, "'bike'", "'authors'"),
    "model_name": ({"model_name": "ViT-B-16"}, "'ViT-B-32'", "'ViT-B-16'"),
    "weights": ({"pretrained": "laion2b_s34b_b79k"}, "'openai'", "'laion2b_s34b_b79k'"),
    "quick_gelu": ({"quick_gelu": False}, "True", "False"),
    "embed_dim": ({"embed_dim": 768}, "512", "768"),
    "image_size": ({"image_size": 336}, "224", "336"),
}


def test_every_compared_field_has_a_case_here():
    assert set(CHANGES) == set(FIELDS)


@pytest.mark.parametrize("field", FIELDS)
def test_a_difference_in_each_field_is_refused_naming_it(field):
    change, before, after = CHANGES[field]
    with pytest.raises(CacheMismatchError) as refused:
        check_same_model(RECORD, "the cache c.h5", {**RECORD, **change}, "--checkpoint run")
    message = str(refused.value)
    assert f"{field}: {before} in the cache c.h5, {after} in --checkpoint run" in message
    assert all(f"{other}:" not in message for other in FIELDS if other != field), "only the field that differs"


@pytest.mark.parametrize("field", FIELDS)
def test_allow_model_mismatch_warns_of_each_field_instead(field, caplog):
    change, _, _ = CHANGES[field]
    same_space = field != "embed_dim"  # other widths go on only where no vectors meet: test_model_mismatch_widths.py
    with caplog.at_level(logging.WARNING):
        check_same_model(RECORD, "a", {**RECORD, **change}, "b", allow=True, same_space=same_space)
    assert f"{field}:" in caplog.text


@pytest.mark.parametrize("field", ["compat", "embed_dim", "image_size", "quick_gelu"])
def test_a_field_one_side_does_not_record_is_not_compared(field):
    check_same_model(RECORD, "a", {**RECORD, field: None}, "b")


def test_weights_compare_the_file_contents_where_both_sides_have_them():
    a = {**RECORD, "pretrained": "/old/place/w.pt", "checkpoint_sha256": "ab" * 32}
    check_same_model(a, "a", {**a, "pretrained": "/new/place/w.pt"}, "b")  # the same file, moved
    with pytest.raises(CacheMismatchError, match="weights: 'abab"):
        check_same_model(a, "a", {**a, "checkpoint_sha256": "cd" * 32}, "b")


def test_a_clip_spec_and_a_record_are_compared_alike():
    spec = ClipSpec(model_name="ViT-B-32", pretrained="openai", checkpoint_sha256=None, quick_gelu=True,
                    image_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), embed_dim=512)
    check_same_model(spec, "the text encoder", {**RECORD, "compat": None}, "the cache")
    with pytest.raises(CacheMismatchError, match="image_size: 224 in the text encoder, 336 in the cache"):
        check_same_model(spec, "the text encoder", {**RECORD, "image_size": 336}, "the cache")
