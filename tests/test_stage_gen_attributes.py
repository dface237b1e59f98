"""The gen-attributes stage, its CSV formats and the `bike gen-attributes` command."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import open_clip
import pytest
import torch
from typer.testing import CliRunner

from bike_cli.cli.app import app
from bike_cli.config.stages import ExtractConfig, GenAttributesConfig
from bike_cli.errors import CacheMismatchError, InputError
from bike_cli.eval.metrics import topk_accuracy
from bike_cli.io.attributes_csv import AttributesTable, read_attributes_csv, write_attributes_csv
from bike_cli.io.checkpoints import PHRASE_CACHE_KIND
from bike_cli.io.feature_cache import (
    Batch,
    CacheMeta,
    FeatureCache,
    PartWriter,
    finish,
    merge,
    parts_dir_for,
    scan_parts,
    write_meta_file,
)
from bike_cli.io.score_csv import class_columns, read_score_csv, write_score_csv
from bike_cli.models import attributes as ma
from bike_cli.models.attributes import topk_cosine
from bike_cli.models.clip import load_clip
from bike_cli.models.registry import CONFIG_DIR, get_tokenizer
from bike_cli.stages.extract import run_extraction
from bike_cli.stages.gen_attributes import run_gen_attributes

PHRASES = ["riding a bike", "swimming", "sky", "a red square", "a blue circle", "noise", "dancing",
           "cooking", "a dog", "playing guitar", "reading a book", "snow"]


# ----------------------------------------------------------------------------- helpers


def write_cache(path, emb, labels, class_names=(), model="bike-tiny", multilabel=False, **meta_fields):
    """A feature cache [N, V, T, D] made through the cache's own part-and-merge writer (`meta_fields`: other
    CacheMeta values, e.g. image_size=224)."""
    n, views, frames, dim = emb.shape
    meta = CacheMeta(**{
        "model_name": model, "pretrained": "none", "checkpoint_sha256": None, "quick_gelu": False, "image_size": 64,
        "embed_dim": dim, "frames": frames, "clips": views, "crops": 1, "sampling_mode": "test", "seed": 0,
        "decoder": "decord", "multilabel": multilabel, "num_classes": len(class_names) or int(np.max(labels)) + 1,
        "class_names": tuple(class_names), **meta_fields})
    parts = parts_dir_for(path)
    write_meta_file(parts, meta)
    PartWriter(parts, 0).write(Batch(
        list_index=np.arange(n), video_ids=[f"vid{i:03d}" for i in range(n)], embeddings=emb.astype(np.float16),
        labels=np.asarray(labels), num_frames=np.full(n, frames), decoders=["decord"] * n))
    merge(path, scan_parts(parts), meta)
    finish(parts)
    return path


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_clip("bike-tiny", "none")
    return model, get_tokenizer("bike-tiny")


def encode(tiny, texts):
    """Normalised float64 text embeddings, computed here independently of the stage."""
    model, tokenizer = tiny
    with torch.no_grad():
        emb = model.encode_text(tokenizer(list(texts))).double().numpy()
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def brute_force_topk(video, phrase, k, banned=()):
    """Top-k by full cosine matrix and numpy argsort; `banned` = (row, col) pairs set to -inf."""
    video = video / np.linalg.norm(video, axis=1, keepdims=True)
    sims = video @ phrase.T
    for row, col in banned:
        sims[row, col] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def mean_features(path, per_view=False):
    with FeatureCache(path) as cache:
        emb = cache.embeddings(slice(0, len(cache))).astype(np.float64)  # [N, V, T, D]
    pooled = emb.mean(2) if per_view else emb.mean((1, 2))
    return pooled.reshape(-1, emb.shape[-1])


@pytest.fixture
def lexicon(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text("\n".join(PHRASES) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cache(tmp_path):
    rng = np.random.default_rng(0)
    return write_cache(tmp_path / "cache.h5", rng.normal(size=(23, 3, 4, 64)), rng.integers(0, 4, 23),
                       class_names=("swimming", "sky", "dancing", "unknown thing"))


# ----------------------------------------------------------------------------- top-k


@pytest.mark.parametrize("max_elements", [1 << 30, 37 * 5, 1])
def test_topk_cosine_matches_numpy_argsort_whatever_the_block_size(max_elements):
    gen = torch.Generator().manual_seed(1)
    queries = torch.nn.functional.normalize(torch.randn(37, 16, generator=gen), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(101, 16, generator=gen), dim=1)
    values, indices = topk_cosine(queries, keys, 5, max_elements=max_elements)
    order, expected = brute_force_topk(queries.double().numpy(), keys.double().numpy(), 5)
    np.testing.assert_array_equal(indices.numpy(), order)
    np.testing.assert_allclose(values.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("max_elements", [1 << 30, 20 * 3])
def test_topk_cosine_never_picks_excluded_pairs(max_elements):
    gen = torch.Generator().manual_seed(2)
    queries = torch.nn.functional.normalize(torch.randn(20, 8, generator=gen), dim=1)
    keys = torch.nn.functional.normalize(torch.randn(30, 8, generator=gen), dim=1)
    _, plain = topk_cosine(queries, keys, 3)
    banned = [(row, int(plain[row, 0])) for row in range(0, 20, 2)]  # each even row's best key
    _, indices = topk_cosine(queries, keys, 3, exclude=torch.tensor(banned), max_elements=max_elements)
    order, _ = brute_force_topk(queries.double().numpy(), keys.double().numpy(), 3, banned)
    np.testing.assert_array_equal(indices.numpy(), order)
    assert all(col not in indices[row].tolist() for row, col in banned)


def test_stage_top_k_matches_brute_force(tmp_path, cache, lexicon, tiny):
    summary = run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                                     top_k=4))
    table = read_attributes_csv(tmp_path / "a.csv")
    order, expected = brute_force_topk(mean_features(cache), encode(tiny, PHRASES), 4)
    assert table.attributes == [[PHRASES[i] for i in row] for row in order]
    np.testing.assert_allclose(table.scores, expected, atol=2e-6)
    assert table.video_ids == FeatureCache(cache).video_ids
    assert summary.rows == summary.videos == 23


@pytest.mark.parametrize("per_view", [False, True])
def test_chunking_gives_the_same_result_as_one_chunk(tmp_path, cache, lexicon, per_view):
    outputs = []
    for name, chunk, budget in (("one", 10_000, 1 << 30), ("rows", 2, 1 << 30), ("both", 4, 5)):
        out = tmp_path / f"{name}.csv"
        run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=out, top_k=3,
                                               per_view=per_view, chunk_size=chunk, max_elements=budget,
                                               phrase_cache=tmp_path / "phrases.pt"))
        outputs.append(read_attributes_csv(out))
    for other in outputs[1:]:
        assert other.attributes == outputs[0].attributes
        assert other.views == outputs[0].views
        np.testing.assert_allclose(other.scores, outputs[0].scores, atol=1e-6)


def test_per_view_rows_are_each_view_against_brute_force(tmp_path, cache, lexicon, tiny):
    run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                           top_k=2, per_view=True))
    table = read_attributes_csv(tmp_path / "a.csv")
    assert len(table) == 23 * 3
    assert table.views == [0, 1, 2] * 23
    assert table.video_ids[:4] == ["vid000", "vid000", "vid000", "vid001"]
    order, _ = brute_force_topk(mean_features(cache, per_view=True), encode(tiny, PHRASES), 2)
    assert table.attributes == [[PHRASES[i] for i in row] for row in order]


# ----------------------------------------------------------------------------- outputs


def test_sentence_joins_attributes_with_a_comma_after_the_prompt(tmp_path, cache, lexicon):
    run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv", top_k=3))
    table = read_attributes_csv(tmp_path / "a.csv")
    for attrs, sentence in zip(table.attributes, table.sentences):
        assert sentence == "This is a video about " + ",".join(attrs)
    run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "b.csv", top_k=2,
                                           sentence_template="{}.", separator=" and "))
    other = read_attributes_csv(tmp_path / "b.csv")
    assert other.sentences[0] == f"{other.attributes[0][0]} and {other.attributes[0][1]}."


def test_drop_own_class_removes_the_class_phrase(tmp_path, lexicon, tiny):
    classes = ("swimming", "sky", "dancing")
    targets = encode(tiny, classes)  # videos that look exactly like their class phrase
    labels = np.array([0, 1, 2, 0, 1, 2, -1])
    emb = np.stack([targets[c] if c >= 0 else targets[0] for c in labels])[:, None, None, :]
    path = write_cache(tmp_path / "c.h5", emb, labels, class_names=classes)
    plain, dropped = tmp_path / "plain.csv", tmp_path / "dropped.csv"
    run_gen_attributes(GenAttributesConfig(features=path, lexicon=str(lexicon), out=plain, top_k=3))
    summary = run_gen_attributes(GenAttributesConfig(features=path, lexicon=str(lexicon), out=dropped, top_k=3,
                                                     drop_own_class=True))
    before, after = read_attributes_csv(plain), read_attributes_csv(dropped)
    assert [a[0] for a in before.attributes[:6]] == [classes[c] for c in labels[:6]]
    own = [PHRASES.index(classes[c]) for c in labels[:6]]
    order, _ = brute_force_topk(emb[:, 0, 0], encode(tiny, PHRASES), 3, list(enumerate(own)))
    assert after.attributes == [[PHRASES[i] for i in row] for row in order]
    assert all(classes[c] not in attrs for c, attrs in zip(labels[:6], after.attributes))
    assert after.attributes[6] == before.attributes[6]  # unknown label: nothing removed
    assert summary.own_class_phrases == 3


def test_drop_own_class_matches_names_case_and_underscore_insensitively(tmp_path, lexicon, tiny):
    emb = encode(tiny, ["playing guitar"])[:, None, None, :]
    path = write_cache(tmp_path / "c.h5", emb, np.array([0]), class_names=("Playing_Guitar",))
    run_gen_attributes(GenAttributesConfig(features=path, lexicon=str(lexicon), out=tmp_path / "a.csv", top_k=2,
                                           drop_own_class=True))
    assert "playing guitar" not in read_attributes_csv(tmp_path / "a.csv").attributes[0]


def test_top_k_above_the_phrases_left_once_the_own_class_is_dropped_names_the_video(tmp_path, lexicon, tiny):
    classes = ("noise", "swimming")  # the first video's class is no phrase: nothing is dropped for it
    emb = encode(tiny, ["noise", "swimming"])[:, None, None, :]
    path = write_cache(tmp_path / "c.h5", emb, np.array([-1, 1]), class_names=classes)
    with pytest.raises(InputError, match=r"^--top-k 12 is more than the phrases left for video 'vid001' once its "
                                         r"own class is dropped$"):
        run_gen_attributes(GenAttributesConfig(features=path, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                               top_k=len(PHRASES), drop_own_class=True))


def test_attribute_scores_are_sentence_class_cosines_with_metrics(tmp_path, cache, lexicon, tiny):
    summary = run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                                     top_k=3, scores=tmp_path / "s.csv"))
    table, scores = read_attributes_csv(tmp_path / "a.csv"), read_score_csv(tmp_path / "s.csv")
    names = list(FeatureCache(cache).meta.class_names)
    expected = encode(tiny, table.sentences) @ encode(tiny, [f"This is a video about {n}" for n in names]).T
    np.testing.assert_allclose(scores.scores, expected, atol=1e-5)
    assert scores.class_names == names and scores.video_ids == table.video_ids
    np.testing.assert_array_equal(scores.labels, FeatureCache(cache).labels)
    accuracy = topk_accuracy(expected, scores.labels)
    assert summary.metrics["top1"] == pytest.approx(accuracy["top1"])
    assert summary.metrics["top5"] == pytest.approx(accuracy["top5"])


def test_per_view_scores_average_the_views(tmp_path, cache, lexicon, tiny):
    run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                           top_k=2, per_view=True, scores=tmp_path / "s.csv", chunk_size=4))
    table, scores = read_attributes_csv(tmp_path / "a.csv"), read_score_csv(tmp_path / "s.csv")
    names = scores.class_names
    per_row = encode(tiny, table.sentences) @ encode(tiny, [f"This is a video about {n}" for n in names]).T
    np.testing.assert_allclose(scores.scores, per_row.reshape(23, 3, -1).mean(1), atol=1e-5)


def test_scores_need_class_names(tmp_path, lexicon):
    path = write_cache(tmp_path / "c.h5", np.ones((2, 1, 1, 64)), np.array([0, 1]))
    with pytest.raises(InputError, match="no class names.*--classes"):
        run_gen_attributes(GenAttributesConfig(features=path, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                               scores=tmp_path / "s.csv"))
    classes = tmp_path / "classes.txt"
    classes.write_text("swimming\nsky\n", encoding="utf-8")
    run_gen_attributes(GenAttributesConfig(features=path, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                           scores=tmp_path / "s.csv", classes=classes))
    assert read_score_csv(tmp_path / "s.csv").class_names == ["swimming", "sky"]


# ----------------------------------------------------------------------------- model checks


def test_cache_of_another_embedding_size_is_a_clear_error(tmp_path, cache, lexicon):
    with pytest.raises(InputError, match=r"ViT-B-32 embeds text in 512 dimensions.*64-d image embeddings"):
        run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                               model="ViT-B-32"))
    other = write_cache(tmp_path / "c32.h5", np.ones((2, 1, 1, 32)), np.array([0, 1]))
    with pytest.raises(InputError, match="bike-tiny embeds text in 64 dimensions.*32-d"):
        run_gen_attributes(GenAttributesConfig(features=other, lexicon=str(lexicon), out=tmp_path / "a.csv"))
    assert not (tmp_path / "a.csv").exists()


def test_same_size_but_other_model_is_refused_unless_allowed(tmp_path, cache, lexicon, caplog):
    config = json.loads((CONFIG_DIR / "bike-tiny.json").read_text())
    config["text_cfg"]["layers"] = 1
    (tmp_path / "bike-tiny-other.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "bike-tiny-other.json")
    with pytest.raises(CacheMismatchError, match="model_name: 'bike-tiny-other' in the text encoder, 'bike-tiny' in"):
        run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                               model="bike-tiny-other"))
    assert not (tmp_path / "a.csv").exists()
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                               model="bike-tiny-other", allow_model_mismatch=True))
    assert any("is not the model that made" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "b.csv"))
    assert not any("is not the model that made" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- phrase cache


def test_phrase_embeddings_are_reused_and_redone_when_the_lexicon_changes(tmp_path, cache, lexicon, monkeypatch):
    calls = []
    real = ma.encode_texts
    monkeypatch.setattr(ma, "encode_texts", lambda model, tok, texts, *a, **k: calls.append(len(texts)) or
                        real(model, tok, texts, *a, **k))
    cfg = GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv", top_k=2)
    first = run_gen_attributes(cfg)
    assert calls == [len(PHRASES)] and not first.phrase_cache_reused
    assert first.phrase_cache == tmp_path / "a.phrases.pt" and first.phrase_cache.is_file()
    second = run_gen_attributes(cfg)
    assert calls == [len(PHRASES)] and second.phrase_cache_reused
    lexicon.write_text("\n".join(PHRASES + ["a cat"]) + "\n", encoding="utf-8")
    third = run_gen_attributes(cfg)
    assert calls == [len(PHRASES), len(PHRASES) + 1] and not third.phrase_cache_reused
    run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv", top_k=2,
                                           prompt="a photo of {}"))
    assert calls == [len(PHRASES), len(PHRASES) + 1, len(PHRASES) + 1]  # another prompt: encoded again


def test_phrase_cache_file_with_pickled_code_is_ignored(tmp_path, cache, lexicon, caplog):
    cfg = GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv", top_k=2)
    torch.save({"kind": PHRASE_CACHE_KIND, "payload": logging.LogRecord}, cfg.phrase_cache_path)
    with caplog.at_level(logging.WARNING, logger="bike_cli"):
        summary = run_gen_attributes(cfg)
    assert not summary.phrase_cache_reused
    assert any("it holds a pickled logging.LogRecord" in r.getMessage() and "made again" in r.getMessage()
               for r in caplog.records)
    assert torch.load(cfg.phrase_cache_path, weights_only=True)["key"]["num_phrases"] == len(PHRASES)


# ----------------------------------------------------------------------------- option errors


def test_top_k_larger_than_the_lexicon_is_an_error(tmp_path, cache, lexicon):
    with pytest.raises(InputError, match="--top-k 13 is more than the 12 phrases"):
        run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                               top_k=13))


def test_template_without_placeholder_is_an_error(tmp_path, cache, lexicon):
    with pytest.raises(InputError, match="--sentence-template 'This is a video' must contain exactly one"):
        run_gen_attributes(GenAttributesConfig(features=cache, lexicon=str(lexicon), out=tmp_path / "a.csv",
                                               sentence_template="This is a video"))


# ----------------------------------------------------------------------------- CSV formats


def test_attributes_csv_round_trip_and_errors(tmp_path):
    table = AttributesTable(
        video_ids=["a,b.mp4", 'say "hi".mp4'], views=[0, 1], labels=[(2, 5), ()], multilabel=True,
        attributes=[["x, y", "z"], ["z", "x, y"]], scores=np.array([[0.5, 0.25], [0.75, 0.125]], np.float32),
        sentences=["This is a video about x, y,z", "This is a video about z,x, y"], top_k=2,
    )
    path = write_attributes_csv(tmp_path / "t.csv", table)
    back = read_attributes_csv(path)
    assert (back.video_ids, back.views, back.labels, back.attributes, back.sentences) == (
        table.video_ids, table.views, table.labels, table.attributes, table.sentences)
    np.testing.assert_array_equal(back.scores, table.scores)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "video_id,view,labels,attr_1,attr_2,score_1,score_2,sentence"
    path.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}:3: video 'a,b.mp4' view 0 .*repeats line 2"):
        read_attributes_csv(path)
    path.write_text("\n".join([lines[0], lines[1].replace("0.5", "high")]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":2: score 'high' is not a finite number"):
        read_attributes_csv(path)
    path.write_text("video_id,label,attr_1,sentence\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":1: not an attributes CSV header"):
        read_attributes_csv(path)


def test_score_csv_round_trip_with_awkward_class_names(tmp_path):
    names = ["label", "a, b", 'say "x"', "label #0"]
    scores = np.array([[0.1, -0.2, 0.3, 0.4], [1.5, 2.5, -3.5, 0.0]])
    path = write_score_csv(tmp_path / "s.csv", ["v1", "v,2"], np.array([3, -1]), scores, names)
    back = read_score_csv(path)
    assert back.video_ids == ["v1", "v,2"] and not back.multilabel
    assert back.class_names == class_columns(names) == ["label #0", "a, b", 'say "x"', "label #0 #3"]
    np.testing.assert_array_equal(back.labels, [3, -1])
    np.testing.assert_allclose(back.scores, scores, rtol=1e-6)
    multi = write_score_csv(tmp_path / "m.csv", ["v1"], np.array([[0, 1, 0, 1]], np.uint8), scores[:1], names)
    assert multi.read_text().splitlines()[1].startswith("v1,1;3,")
    np.testing.assert_array_equal(read_score_csv(multi).labels, [[0, 1, 0, 1]])


def test_score_csv_reader_names_bad_cells(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("video_id,label,a,b\nv1,0,0.1,0.2\nv2,9,0.1,0.2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"row 2 \(video 'v2'\): label 9 is out of range for 2 classes"):
        read_score_csv(path)
    path.write_text("video_id,label,a,b\nv1,0,0.1,oops\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"row 1 \(video 'v1'\), column 'b': 'oops' is not a finite number"):
        read_score_csv(path)
    path.write_text("id,label,a\n", encoding="utf-8")
    with pytest.raises(InputError, match="expected the header 'video_id,label"):
        read_score_csv(path)


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def extracted(sample_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen_attributes") / "val.h5"
    run_extraction(ExtractConfig(list_path=sample_data.val, classes=sample_data.classes, out=out, frames=4,
                                 workers=0))
    return out


def test_cli_writes_attributes_and_scores_for_an_extracted_cache(tmp_path, extracted, lexicon):
    attrs, scores = tmp_path / "attrs.csv", tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["gen-attributes", "--features", str(extracted), "--lexicon", str(lexicon),
                                      "--out", str(attrs), "--top-k", "3", "--scores", str(scores)])
    assert result.exit_code == 0, result.output
    cache = FeatureCache(extracted)
    table, sa = read_attributes_csv(attrs), read_score_csv(scores)
    assert table.video_ids == sa.video_ids == cache.video_ids
    assert table.labels == [(int(label),) for label in cache.labels]
    assert sa.class_names == list(cache.meta.class_names)
    accuracy = topk_accuracy(sa.scores, sa.labels)
    assert "S_A top1" in result.output and f"{accuracy['top1']:.2f} %" in result.output
    assert (tmp_path / "attrs.phrases.pt").is_file()


def test_cli_unknown_lexicon_exits_with_the_known_names(tmp_path, extracted, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["gen-attributes", "--features", str(extracted), "--lexicon", "k900",
                                      "--out", str(tmp_path / "a.csv")])
    assert result.exit_code == 1
    assert "unknown lexicon 'k900'" in result.output and "k400" in result.output


def test_text_batch_size_below_one_is_refused_before_anything_is_loaded(tmp_path):
    """`--text-batch-size 0` through the real command line: one line naming the option, exit 1, nothing written."""
    out = tmp_path / "attrs.csv"
    result = CliRunner().invoke(app, ["gen-attributes", "--features", str(tmp_path / "none.h5"), "--lexicon", "k400", "--out", str(out),
                                      "--text-batch-size", "0"])
    assert result.exit_code == 1, result.output
    assert "--text-batch-size must be at least 1, not 0" in " ".join(result.output.split())
    assert not out.exists()
