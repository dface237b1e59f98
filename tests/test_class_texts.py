"""Several descriptions per class (`--class-texts`, issue 29.4): the file formats, the averaged class
embeddings, the VCS saliency as the mean of the descriptions' saliencies, the record in checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bike_cli.config.stages import TrainVideoConfig
from bike_cli.data.class_names import descriptions_for, read_class_texts
from bike_cli.data.synthetic import SAMPLE_CLASSES
from bike_cli.errors import InputError
from bike_cli.io.checkpoints import load_video_checkpoint
from bike_cli.models.clip import load_clip
from bike_cli.models.heads import vcs_logits, vcs_saliency
from bike_cli.models.registry import get_tokenizer
from bike_cli.models.text import encode_class_texts
from bike_cli.stages.train_video import run_train_video

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["playing guitar", "tai chi", "juggling balls"]
TEMPLATES = ("a video of {}.", "{}")


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_clip("bike-tiny", "none")
    return model, get_tokenizer("bike-tiny")


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- the file ------------------------------------------------------------------------------------------------


def test_csv_rows_of_a_class_are_its_descriptions_in_file_order(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text('class,text\nPlaying_Guitar,strumming a guitar\ntai chi,slow martial arts\n'
                    'playing guitar,"a person plays the guitar, seated"\n')
    texts = read_class_texts(path)
    assert texts == {"Playing_Guitar": ("strumming a guitar", "a person plays the guitar, seated"),
                     "tai chi": ("slow martial arts",)}
    assert descriptions_for(texts, ["Tai  Chi", "playing guitar"], path) == [
        ("slow martial arts",), ("strumming a guitar", "a person plays the guitar, seated")]


def test_json_maps_each_class_to_its_descriptions(tmp_path):
    path = tmp_path / "texts.json"
    path.write_text(json.dumps({"playing guitar": ["strumming", "a guitar solo"], "tai chi": "slow martial arts"}))
    assert descriptions_for(read_class_texts(path), ["tai chi", "playing guitar"], path) == [
        ("slow martial arts",), ("strumming", "a guitar solo")]


def test_a_class_without_a_description_is_one_error_naming_every_missing_class_and_the_file(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("class,text\ntai chi,slow martial arts\n")
    with pytest.raises(InputError) as err:
        descriptions_for(read_class_texts(path), NAMES, path)
    message = str(err.value)
    assert str(path) in message and "'playing guitar'" in message and "'juggling balls'" in message
    assert "2 of the 3 classes" in message and "\n" not in message


@pytest.mark.parametrize(("content", "says"), [
    ("name,text\na,b\n", "expected the header 'class,text'"),
    ("class,text\na\n", "expected 'class,text'"),
    ("class,text\na, \n", "an empty text"),
    ('{"a": []}', "needs a non-empty list"),
    ('{"a": ["x"', "not a JSON class-texts file"),
    ("\n\n", "is empty"),
])
def test_a_malformed_file_is_refused_with_what_is_wrong(tmp_path, content, says):
    path = tmp_path / "texts.txt"
    path.write_text(content)
    with pytest.raises(InputError, match=says):
        read_class_texts(path)


# -- the class embeddings ------------------------------------------------------------------------------------


def test_one_description_per_class_gives_todays_embeddings_and_queries(tiny):
    model, tokenizer = tiny
    today = encode_class_texts(model, tokenizer, NAMES, TEMPLATES, "words")
    described = encode_class_texts(model, tokenizer, NAMES, TEMPLATES, "words", descriptions=[[n] for n in NAMES])
    close(described.pooled, today.pooled)
    close(described.tokens, today.tokens)
    assert torch.equal(described.token_mask, today.token_mask) and described.token_weights is None
    # a description other than the name: the class is encoded as that text would be as a class name
    other = encode_class_texts(model, tokenizer, ["x", "y"], TEMPLATES, "words", descriptions=[["tai chi"], ["juggling balls"]])
    close(other.pooled, today.pooled[1:])


def test_two_descriptions_give_the_normalised_mean_of_their_normalised_embeddings(tiny):
    model, tokenizer = tiny
    descriptions = [["strumming a guitar", "a guitar solo on stage"], ["tai chi"], ["juggling", "three balls in the air"]]
    texts = encode_class_texts(model, tokenizer, NAMES, ("{}",), "words", descriptions=descriptions)
    with torch.no_grad():
        for k, class_texts in enumerate(descriptions):
            single = F.normalize(model.encode_text(tokenizer(class_texts)).float(), dim=-1)  # [n, D]
            close(texts.pooled[k], F.normalize(single.mean(0), dim=-1))
    assert torch.allclose(texts.pooled.norm(dim=-1), torch.ones(3))  # renormalised


def test_with_several_templates_the_mean_runs_over_every_description_and_template(tiny):
    model, tokenizer = tiny
    descriptions = [["strumming a guitar", "a guitar solo"]]
    texts = encode_class_texts(model, tokenizer, ["guitar"], TEMPLATES, "all", descriptions=descriptions)
    prompts = [t.replace("{}", d) for d in descriptions[0] for t in TEMPLATES]
    with torch.no_grad():
        each = F.normalize(model.encode_text(tokenizer(prompts)).float(), dim=-1)  # [4, D]
    close(texts.pooled[0], F.normalize(each.mean(0), dim=-1))


# -- VCS -----------------------------------------------------------------------------------------------------


def _frames() -> torch.Tensor:
    return torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))  # [B, T, D]


def test_vcs_with_one_description_per_class_equals_todays(tiny):
    model, tokenizer = tiny
    today = encode_class_texts(model, tokenizer, NAMES, TEMPLATES, "words")
    described = encode_class_texts(model, tokenizer, NAMES, TEMPLATES, "words", descriptions=[[n] for n in NAMES])
    frames = _frames()
    close(vcs_logits(frames, described), vcs_logits(frames, today))


def test_vcs_saliency_is_the_mean_of_each_descriptions_saliency(tiny):
    model, tokenizer = tiny
    descriptions = [["strumming a guitar", "guitar"], ["tai chi"], ["juggling", "three balls thrown in the air", "toss"]]
    texts = encode_class_texts(model, tokenizer, NAMES, TEMPLATES, "words", descriptions=descriptions)
    frames = _frames()
    got = vcs_saliency(frames, texts.tokens, texts.token_weights)  # [B, 3, T]
    for k, class_texts in enumerate(descriptions):
        each = encode_class_texts(model, tokenizer, class_texts, TEMPLATES, "words")  # a class per description
        per_description = vcs_saliency(frames, each.tokens, each.token_mask)  # [B, n, T]
        close(got[:, k], per_description.mean(1))
    close(texts.token_weights.sum(1), torch.ones(3))
    # the head scores with the weighted saliency (Eq. 6 on the averaged class embedding)
    frame_class = torch.einsum("btd,cd->bct", F.normalize(frames, dim=-1), F.normalize(texts.pooled, dim=-1))
    close(vcs_logits(frames, texts), (got * frame_class).sum(-1))
    picked = texts.select(torch.tensor([2, 0]))
    close(vcs_saliency(frames, picked.tokens, picked.token_weights), got[:, [2, 0]])


# -- checkpoints and the command line ------------------------------------------------------------------------


def _bike(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "bike_cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _texts_file(path: Path, names=SAMPLE_CLASSES, extra: str = "") -> Path:
    rows = [f"{n},{n}\n{n.upper()},a shape that is {n}{extra}\n" for n in names]
    path.write_text("class,text\n" + "".join(rows))
    return path


def test_a_run_records_its_class_texts_and_eval_uses_them_unless_told_otherwise(tmp_path, motion_caches):
    _, train, val = motion_caches
    texts = _texts_file(tmp_path / "texts.csv")
    run = tmp_path / "run"
    run_train_video(TrainVideoConfig(features=train, out=run, epochs=1, batch_size=8, lr=2e-3, warmup_epochs=1,
                                     workers=0, templates=["{}"], temporal_layers=1, class_texts=texts))
    recorded = load_video_checkpoint(run / "last.pt").model_args["class_texts"]
    assert recorded == {n: [n, f"a shape that is {n}"] for n in SAMPLE_CLASSES}

    def scores(out: str, *extra: str) -> str:
        done = _bike("eval", "--checkpoint", str(run), "--features", str(val), "--out", str(tmp_path / out),
                     "--workers", "0", *extra)
        assert done.returncode == 0, done.stderr
        return done.stderr, (tmp_path / out / "video_scores.csv").read_text()

    quiet, recorded_scores = scores("a")
    same, given_scores = scores("b", "--class-texts", str(texts))
    assert recorded_scores == given_scores and "WARNING" not in quiet + same
    warned, other_scores = scores("c", "--class-texts", str(_texts_file(tmp_path / "other.csv", extra=" fast")))
    assert "trained with other class texts" in warned and other_scores != recorded_scores


def test_eval_with_a_class_missing_from_the_texts_is_one_line_exit_1(tmp_path, tiny_cache):
    texts = _texts_file(tmp_path / "texts.csv", SAMPLE_CLASSES[:2])
    done = _bike("eval", "--features", str(tiny_cache), "--out", str(tmp_path / "e"), "--template", "{}",
                 "--workers", "0", "--class-texts", str(texts))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "no description" in line]
    assert len(lines) == 1 and str(texts) in lines[0]
    assert "'circle moving down'" in lines[0] and "'circle moving up'" in lines[0]
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_search_eval_with_each_class_described_by_its_name_matches_the_names(tmp_path, tiny_cache):
    from bike_cli.config.stages import SearchConfig
    from bike_cli.stages.search import run_search

    names = tmp_path / "names.csv"  # each class described by its name alone
    names.write_text("class,text\n" + "".join(f"{n},{n}\n" for n in SAMPLE_CLASSES))
    plain = run_search(SearchConfig(features=tiny_cache, evaluate=True)).evaluation
    same = run_search(SearchConfig(features=tiny_cache, evaluate=True, class_texts=names)).evaluation
    assert same == plain
    described = run_search(SearchConfig(features=tiny_cache, evaluate=True,
                                        class_texts=_texts_file(tmp_path / "two.csv"))).evaluation
    assert described["classes"] == plain["classes"] and set(described["rules"]) == {"vcs", "mean"}
    with pytest.raises(InputError, match="add --eval"):
        run_search(SearchConfig(features=tiny_cache, queries=["a"], class_texts=names))
