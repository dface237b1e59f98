"""Nothing wrong happens quietly: each mistake a user can make on the command line is one line naming
the value and what to do, with the exit code of the convention (0 ok, 1 bike reports, 2 usage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bike_cli.cli.app import app

runner = CliRunner()
BIKE = [sys.executable, "-m", "bike_cli"]


def flat(text: str) -> str:
    return " ".join(text.split())


def no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def train_args(train: Path, out: Path, *extra: str) -> list[str]:
    return ["train-video", "--features", str(train), "--out", str(out), "--epochs", "1", "--batch-size", "8",
            "--workers", "0", "--template", "{}", "--temporal-layers", "1", *extra]


def test_extract_features_without_model_says_how_to_choose_one(tmp_path, sample_data):
    result = runner.invoke(app, ["extract-features", "--list", str(sample_data.train), "--out", str(tmp_path / "c.h5")])
    assert result.exit_code == 2
    text = flat(result.output)
    assert "needs --model" in text and "ViT-B-16 --pretrained openai" in text and "bike-tiny" in text
    assert not (tmp_path / "c.h5").exists()


def test_only_demo_defaults_to_bike_tiny():
    demo = runner.invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    extract = runner.invoke(app, ["extract-features", "--help"], env={"COLUMNS": "200"})
    assert "[default: bike-tiny]" in demo.output
    assert "[default: bike-tiny]" not in extract.output


def test_training_into_a_run_needs_resume_or_overwrite(tmp_path, motion_caches):
    _, train, _ = motion_caches
    run = tmp_path / "run"
    assert runner.invoke(app, train_args(train, run)).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    again = runner.invoke(app, train_args(train, run))
    assert again.exit_code == 1
    assert f"{run} already holds a train-video run" in flat(again.output)
    assert "--resume" in again.output and "--overwrite" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before

    resumed = runner.invoke(app, train_args(train, run, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "finished all 1 epochs before; nothing to do" in flat(resumed.output)
    assert "nan" not in resumed.output
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before  # config.yaml too

    overwritten = runner.invoke(app, train_args(train, run, "--overwrite"))
    assert overwritten.exit_code == 0, overwritten.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # a new run, not appended to the old


def test_resume_and_overwrite_together_is_an_error(tmp_path, motion_caches):
    _, train, _ = motion_caches
    result = runner.invoke(app, train_args(train, tmp_path / "run", "--resume", "--overwrite"))
    assert result.exit_code == 1
    assert "give one of them" in flat(result.output)


def test_first_resume_run_prints_no_warning(tmp_path, motion_caches):
    _, train, _ = motion_caches
    result = subprocess.run([*BIKE, *train_args(train, tmp_path / "run", "--resume")], capture_output=True,
                            text=True, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr


def test_mean_head_without_temporal_module_on_a_cache_has_nothing_to_train(tmp_path, motion_caches):
    _, train, _ = motion_caches
    result = runner.invoke(app, train_args(train, tmp_path / "run", "--head", "mean", "--temporal", "none"))
    assert result.exit_code == 1
    assert "nothing to train but the logit scale" in flat(result.output) and "--videos" in result.output
    assert not (tmp_path / "run").exists()


def test_zero_shot_eval_takes_frames_from_the_cache(tmp_path, tiny_cache):
    result = runner.invoke(app, ["eval", "--features", str(tiny_cache), "--out", str(tmp_path / "ev"), "--workers", "0"])
    assert result.exit_code == 0, result.output  # 8 frames (the old default) from a 4-frame cache was an error
    assert (tmp_path / "ev" / "video_scores.csv").is_file()


@pytest.mark.parametrize("command", ["eval", "train-video"])
def test_device_this_machine_lacks_is_one_line(tmp_path, tiny_cache, command):
    args = (["eval", "--features", str(tiny_cache), "--out", str(tmp_path / "ev")] if command == "eval"
            else train_args(tiny_cache, tmp_path / "run"))
    result = runner.invoke(app, [*args, "--device", "cuda:99"])
    assert result.exit_code == 1
    no_traceback(result)
    assert "--device cuda:99" in flat(result.output)


def test_classes_shorter_than_the_labels(tmp_path, tiny_cache, sample_data):
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    result = runner.invoke(app, ["eval", "--features", str(tiny_cache), "--classes", str(short), "--out", str(tmp_path / "e")])
    assert result.exit_code == 1
    no_traceback(result)
    assert f"--classes {short} has 2 names" in flat(result.output) and "4 classes" in flat(result.output)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{sample_data.root / 'videos' / 'x.mp4'} 3\n")
    extract = runner.invoke(app, ["extract-features", "--list", str(listing), "--classes", str(short), "--model",
                                  "bike-tiny", "--out", str(tmp_path / "c.h5")])
    assert extract.exit_code == 1
    assert f"{listing}:1: label 3 is out of range for 2 classes" in flat(extract.output)


def cache_of(tmp_path: Path, model: str, **meta) -> Path:
    """A small cache recorded as made by `model` (512-d), so that loading that model is the next step."""
    from test_stage_gen_attributes import write_cache

    emb = np.random.default_rng(0).standard_normal((4, 1, 4, 512))
    return write_cache(tmp_path / f"{model}.h5", emb, np.arange(4), class_names="abcd", model=model, image_size=224,
                       **meta)


def test_missing_optional_package_is_one_line(tmp_path, monkeypatch):
    import open_clip.hf_model

    monkeypatch.setattr(open_clip.hf_model, "transformers", None)  # as where transformers is not installed
    cache = cache_of(tmp_path, "roberta-ViT-B-32")
    result = runner.invoke(app, ["eval", "--features", str(cache), "--out", str(tmp_path / "e"),
                                 "--model", "roberta-ViT-B-32", "--pretrained", "none", "--allow-model-mismatch"])
    assert result.exit_code == 1
    no_traceback(result)
    assert "roberta-ViT-B-32's text tower needs the transformers package" in flat(result.output)
    assert "pip install 'bike-cli[hf]'" in flat(result.output)


@pytest.mark.parametrize("given, message", [
    ("cache", "{path} is an HDF5 file (such as a feature cache), not a checkpoint (a torch.save file); give it as "
              "--features"),
    ("folder", "{path} is not a bike run folder: it holds no best.pt or last.pt"),
])
def test_checkpoint_that_is_not_one(tmp_path, tiny_cache, given, message):
    path = tiny_cache if given == "cache" else tmp_path / "somewhere"
    if given == "folder":
        path.mkdir()
    result = runner.invoke(app, ["eval", "--checkpoint", str(path), "--features", str(tiny_cache), "--out",
                                 str(tmp_path / "e")])
    assert result.exit_code == 1
    assert message.format(path=path) in flat(result.output)


def test_attributes_csv_given_to_fuse(tmp_path, tiny_cache):
    attrs = tmp_path / "attrs.csv"
    made = runner.invoke(app, ["gen-attributes", "--features", str(tiny_cache), "--lexicon", "hmdb51", "--out", str(attrs)])
    assert made.exit_code == 0, made.output
    result = runner.invoke(app, ["fuse", str(attrs), str(attrs), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 1
    assert f"{attrs} is an attributes CSV" in flat(result.output) and "--scores" in result.output
    assert not (tmp_path / "f.csv").exists()


def test_offline_pretrained_tag_fails_at_once_with_one_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), COLUMNS="300")  # nothing listens
    cache = cache_of(tmp_path, "ViT-B-32", quick_gelu=True)
    result = subprocess.run([*BIKE, "eval", "--features", str(cache), "--out", str(tmp_path / "e"), "--model",
                             "ViT-B-32", "--pretrained", "openai", "--allow-model-mismatch"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("cannot download the 'openai' weights of ViT-B-32") == 1
    assert "--pretrained /path/to/ViT-B-32.pt" in flat(result.stderr)
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("spelling", ["IN-1K", "kinetics400"])
def test_paper_spellings_of_lexicons(tmp_path, tiny_cache, spelling):
    result = runner.invoke(app, ["gen-attributes", "--features", str(tiny_cache), "--lexicon", spelling, "--out",
                                 str(tmp_path / "a.csv")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert ("998 phrases" if spelling == "IN-1K" else "400 phrases") in result.output


def test_unknown_lexicon_suggests_close_names(tmp_path, tiny_cache):
    result = runner.invoke(app, ["gen-attributes", "--features", str(tiny_cache), "--lexicon", "k40", "--out",
                                 str(tmp_path / "a.csv")])
    assert result.exit_code == 1
    assert "unknown lexicon 'k40'" in flat(result.output) and "did you mean 'k400'?" in flat(result.output)


def test_exit_codes_0_success_1_reported_2_usage(tmp_path):
    ok = subprocess.run([*BIKE, "--version"], capture_output=True, text=True)
    usage = subprocess.run([*BIKE, "fuse", "--no-such-option"], capture_output=True, text=True)
    reported = subprocess.run([*BIKE, "fuse", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out",
                               str(tmp_path / "f.csv")], capture_output=True, text=True)
    assert (ok.returncode, usage.returncode, reported.returncode) == (0, 2, 1)
    assert "No such option" in usage.stderr and "not found" in reported.stderr


@pytest.mark.parametrize("command", ["train-video", "eval"])
@pytest.mark.parametrize("option, message", [
    (["--template", "no braces"], "prompt template 'no braces' must contain exactly one '{}' for the class name"),
    (["--vcs-tokens", "eot"], "vcs_tokens must be one of words, all, not 'eot'"),
    (["--head", "max"], "unknown video head 'max'; choose one of mean, vcs"),
])
def test_a_setting_the_model_cannot_take_is_one_line(tmp_path, tiny_cache, command, option, message):
    """models/ raises ValueError for these; the stage or the loader that took the value reports it."""
    args = (["eval", "--features", str(tiny_cache), "--out", str(tmp_path / "run"), "--workers", "0"]
            if command == "eval" else train_args(tiny_cache, tmp_path / "run"))
    result = runner.invoke(app, [*args, *option])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    assert f"error: {message}" in flat(result.output)
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "run" / "video_scores.csv").exists()


@pytest.fixture(scope="module")
def vcs_run(tmp_path_factory, tiny_cache):
    """A one-epoch train-video run on the tiny cache: VCS head, template '{}', words."""
    run = tmp_path_factory.mktemp("vcs_run") / "run"
    result = runner.invoke(app, train_args(tiny_cache, run, "--frames", "4"))
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("option, message", [
    (["--head", "mean"], "--head mean differs from 'vcs', the setting {run} was trained with; leave --head out "
     "with --checkpoint"),
    (["--vcs-tokens", "all"], "--vcs-tokens all differs from 'words', the setting {run} was trained with"),
    (["--template", "a video of {}"], "--template 'a video of {{}}' differs from ('{{}}',), the setting {run} was "
     "trained with; leave --template out with --checkpoint"),
    (["--model", "ViT-B-32"], "--model ViT-B-32 differs from 'bike-tiny', the setting {run} was trained with"),
    (["--no-quick-gelu", "--quick-gelu"], "--quick-gelu True differs from False, the setting {run} was trained with"),
])
def test_eval_refuses_what_the_checkpoint_fixes_instead_of_recording_it(tmp_path, tiny_cache, vcs_run, option,
                                                                        message):
    """`eval --checkpoint RUN --head mean` scored with RUN's VCS head and wrote `mean` into metrics.json: now the
    options a checkpoint fixes are refused when they differ (predict's rule, one loader), nothing written."""
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "--checkpoint", str(vcs_run), "--features", str(tiny_cache), "--out",
                                 str(out), "--workers", "0", *option], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    no_traceback(result)
    assert message.format(run=vcs_run) in flat(result.output)
    assert not (out / "metrics.json").exists()


def test_eval_with_the_checkpoint_s_own_settings_records_them(tmp_path, tiny_cache, vcs_run):
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "--checkpoint", str(vcs_run), "--features", str(tiny_cache), "--out",
                                 str(out), "--workers", "0", "--head", "vcs", "--template", "{}"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["head"], config["templates"]) == ("vcs", ["{}"])
