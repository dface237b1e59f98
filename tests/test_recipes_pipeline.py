"""recipes/pipeline.sh run for real (bike-tiny, a generated dataset): every stage's files, skipping
finished stages on a re-run, and the errors it stops with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bike_cli.config.recipe import build_config
from bike_cli.config.stages import TrainVideoConfig
from bike_cli.io.attributes_csv import read_attributes_csv
from bike_cli.io.checkpoints import load_attrs_checkpoint, load_video_checkpoint
from bike_cli.io.feature_cache import FeatureCache
from bike_cli.io.score_csv import read_score_csv

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "recipes" / "pipeline.sh"
FRAMES, CLIPS, CROPS, EPOCHS, TOP_K, FUSE = 8, 2, 3, 2, 3, 0.6
STAGES = ("extract-train", "extract-test", "train-video", "gen-attributes-train", "gen-attributes-test",
          "train-attrs", "eval-full")
LEXICON = ("a red square", "a blue circle", "moving to the left", "moving to the right", "moving up",
           "moving down", "a grey background", "a small shape")
# bike-tiny's random text tower makes prompted class names near-identical: prompt with the bare name.
RECIPE = """stage: train-video
frames: 8
temporal_layers: 1
templates: ["{}"]
batch_size: 8
lr: 2.0e-3
warmup_epochs: 1
"""
# Variables the pipeline reads: none leaks in from the environment running the tests.
PIPELINE_VARS = (
    "MODE TRAIN_LIST VAL_LIST CLASSES MODEL PRETRAINED FRAMES RECIPE OUT CHECKPOINT DATA_ROOT TRAIN_ROOT "
    "VAL_ROOT VIEWS END_TO_END EPOCHS SHOTS INIT_FROM NUM_GPUS ACCELERATE EXTRA_ACCELERATE WORKERS PROTOCOLS "
    "BIKE LEXICON ATTR_MODEL ATTR_PRETRAINED ATTR_FRAMES ATTR_VIEWS TOP_K TRAIN_ATTRS ATTR_TEXT_MODEL "
    "ATTR_TEXT_PRETRAINED ATTRS_TUNE ATTRS_RECIPE ATTRS_EPOCHS FUSE EXTRA_EXTRACT EXTRA_TRAIN_VIDEO "
    "EXTRA_GEN_ATTRIBUTES EXTRA_TRAIN_ATTRS EXTRA_EVAL"
).split()


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PIPELINE_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["BIKE"] = f"{sys.executable} -m bike_cli"
    return env


def _run(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(PIPELINE)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """The whole train-mode pipeline, Video + Attributes branches, once: (folder, env, data, result)."""
    from bike_cli.data.synthetic import make_sample_dataset

    work = tmp_path_factory.mktemp("pipeline")
    data = make_sample_dataset(work / "data", videos_per_class=6, num_frames=16)
    (work / "lexicon.txt").write_text("\n".join(LEXICON) + "\n")
    (work / "recipe.yaml").write_text(RECIPE)
    env = _base_env()
    env.update(
        TRAIN_LIST=str(data.train), VAL_LIST=str(data.val), CLASSES=str(data.classes), MODEL="bike-tiny",
        PRETRAINED="none", FRAMES=str(FRAMES), VIEWS=f"{CLIPS}x{CROPS}", RECIPE="recipe.yaml", OUT="out",
        NUM_GPUS="1", EPOCHS=str(EPOCHS), LEXICON="lexicon.txt", TOP_K=str(TOP_K), FUSE=str(FUSE), WORKERS="0",
        EXTRA_GEN_ATTRIBUTES="--class-prompt {}",
        # quoted words with spaces must reach bike as one option value each
        EXTRA_TRAIN_ATTRS="--template '{}' --template \"a clip of {}\" --batch-size 8 --lr 3e-3 --warmup-epochs 1",
    )
    result = _run(work, env)
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout}\n{result.stderr}"
    return work, env, data, result


def _list_paths(list_csv: Path) -> list[str]:
    return [line.split(",")[0] for line in list_csv.read_text().splitlines()[1:]]


def test_pipeline_runs_every_stage_in_order(pipeline_run):
    _, _, _, result = pipeline_run
    headers = [line for line in result.stdout.splitlines() if line.startswith("==> ")]
    assert [h.split()[2] for h in headers] == list(STAGES)
    assert all("->" in h for h in headers)
    assert "WARNING" not in result.stderr  # e.g. no "--resume: no checkpoint yet" on a first run


def test_pipeline_feature_caches_have_the_requested_views(pipeline_run):
    work, _, data, _ = pipeline_run
    expected = {"train.h5": (data.train, data.num_train, 1, 1), f"val_{CLIPS}x{CROPS}.h5": (data.val, data.num_val, CLIPS, CROPS)}
    for name, (list_csv, rows, clips, crops) in expected.items():
        with FeatureCache(work / "out" / "features" / name) as cache:
            meta = cache.meta
            assert (meta.model_name, meta.frames, meta.clips, meta.crops) == ("bike-tiny", FRAMES, clips, crops)
            assert meta.sampling_mode == "test"
            assert cache.embeddings(slice(None)).shape == (rows, clips * crops, FRAMES, meta.embed_dim)
            assert cache.video_ids == _list_paths(list_csv)
            assert (cache.labels >= 0).all()


def test_pipeline_attributes_cover_every_video(pipeline_run):
    work, _, data, _ = pipeline_run
    attributes = work / "out" / "attributes"
    for name, list_csv, rows in (("train.csv", data.train, data.num_train), ("val.csv", data.val, data.num_val)):
        table = read_attributes_csv(attributes / name)
        assert len(table) == rows and table.top_k == TOP_K
        assert table.video_ids == _list_paths(list_csv)
        assert all(phrase in LEXICON for row in table.attributes for phrase in row)
    zero_training = read_score_csv(attributes / "val_attrs_zero_shot.csv")
    assert zero_training.scores.shape == (data.num_val, data.num_classes)


def test_pipeline_trains_both_branches_for_the_requested_epochs(pipeline_run):
    work, _, data, _ = pipeline_run
    runs = work / "out" / "runs"
    for branch, load in (("video", load_video_checkpoint), ("attrs", load_attrs_checkpoint)):
        for name in ("last.pt", "best.pt", "config.yaml"):
            assert (runs / branch / name).is_file(), f"{branch}/{name} missing"
        lines = (runs / branch / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == list(range(1, EPOCHS + 1))
        last = load(runs / branch / "last.pt")
        assert last.epoch == EPOCHS and len(last.class_names) == data.num_classes
    video_config = yaml.safe_load((runs / "video" / "config.yaml").read_text())
    assert video_config["frames"] == FRAMES and video_config["templates"] == ["{}"]  # the recipe's
    attrs_config = yaml.safe_load((runs / "attrs" / "config.yaml").read_text())
    assert attrs_config["templates"] == ["{}", "a clip of {}"]


def test_pipeline_eval_scores_and_fuses_both_branches(pipeline_run):
    work, _, data, _ = pipeline_run
    folder = work / "out" / "eval" / "full"
    document = json.loads((folder / "metrics.json").read_text())
    assert set(document["metrics"]) == {"video", "attrs", "fused"}
    assert document["videos"] == data.num_val and document["fuse"] == FUSE
    for branch in ("video", "attrs", "fused"):
        table = read_score_csv(folder / f"{branch}_scores.csv")
        assert table.scores.shape == (data.num_val, data.num_classes)
        assert 0.0 <= document["metrics"][branch]["top1"] <= 100.0


def test_pipeline_rerun_skips_finished_stages(pipeline_run):
    work, env, _, _ = pipeline_run
    watched = [work / "out" / p for p in ("features/train.h5", "runs/video/last.pt", "runs/attrs/last.pt",
                                          "attributes/val.csv", "eval/full/metrics.json")]
    before = [p.stat().st_mtime_ns for p in watched]
    started = time.perf_counter()
    result = _run(work, env)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    for stage in STAGES:
        assert f"{stage}: finished earlier, skipped" in result.stdout
    assert "->" not in result.stdout  # no stage started
    assert seconds < 5.0  # one bike start alone takes longer
    assert [p.stat().st_mtime_ns for p in watched] == before


def test_pipeline_refuses_to_resume_training_with_other_options(pipeline_run):
    work, env, _, _ = pipeline_run
    result = _run(work, {**env, "EPOCHS": str(EPOCHS + 1)})
    assert result.returncode == 2
    assert "stage 'train-video' finished earlier with other options" in result.stderr
    assert "--epochs 3" in result.stderr and "train-video.done" in result.stderr
    assert "extract-test: finished earlier, skipped" in result.stdout
    assert "gen-attributes-train" not in result.stdout  # stopped at train-video


def test_pipeline_names_the_stage_that_failed(tmp_path):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "classes.csv").write_text("id,name\n0,a\n1,b\n")
    env = {**_base_env(), "TRAIN_LIST": "missing.csv", "VAL_LIST": "missing_val.csv", "CLASSES": "classes.csv",
           "MODEL": "bike-tiny", "PRETRAINED": "none", "FRAMES": "8", "RECIPE": "recipe.yaml", "OUT": "out"}
    result = _run(tmp_path, env)
    assert result.returncode != 0
    assert "stage 'extract-train' failed" in result.stderr
    assert "missing.csv" in result.stderr  # bike's own message
    assert "extract-test" not in result.stdout
    assert not (tmp_path / "out" / ".pipeline" / "extract-train.done").exists()


@pytest.mark.parametrize("mode, unset", [("train", "MODEL"), ("train", "RECIPE"), ("zero-shot", "CHECKPOINT")])
def test_pipeline_missing_variable_prints_usage(tmp_path, mode, unset):
    env = {**_base_env(), "MODE": mode, "TRAIN_LIST": "t.csv", "VAL_LIST": "v.csv", "CLASSES": "c.csv",
           "MODEL": "bike-tiny", "PRETRAINED": "none", "FRAMES": "8", "RECIPE": "r.yaml", "CHECKPOINT": "run",
           "OUT": "out"}
    del env[unset]
    result = _run(tmp_path, env)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(f"missing required variable(s) for MODE={mode}: {unset}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, value", [("NUM_GPUS", "two"), ("END_TO_END", "yes"), ("TRAIN_ATTRS", "no"),
                                         ("MODE", "test")])
def test_pipeline_rejects_bad_values(tmp_path, name, value):
    env = {**_base_env(), "TRAIN_LIST": "t.csv", "VAL_LIST": "v.csv", "CLASSES": "c.csv", "MODEL": "bike-tiny",
           "PRETRAINED": "none", "FRAMES": "8", "RECIPE": "r.yaml", "OUT": "out", name: value}
    result = _run(tmp_path, env)
    assert result.returncode == 2
    assert f"{name} must be" in result.stderr and value in result.stderr


# A stand-in for bike that only creates the file or run folder each stage would write.
STUB_BIKE = """#!/usr/bin/env bash
stage=$1 out= prev=
for arg in "$@"; do [[ $prev == --out ]] && out=$arg; prev=$arg; done
case $stage in
  train-video | train-attrs) mkdir -p "$out" && touch "$out/last.pt" ;;
  eval) mkdir -p "$out" && touch "$out/metrics.json" ;;
  *) mkdir -p "$(dirname "$out")" && touch "$out" ;;
esac
"""
SCRIPTS = {  # script, its extra variables -> the stages it runs
    "run_k400_vitb32_8f.sh": ({}, ("train-video", "extract-attr-train", "extract-attr-test", "gen-attributes-train",
                                   "gen-attributes-test", "train-attrs", "eval-full")),
    "run_k400_vitb16_8f.sh": ({"LEXICON": ""}, ("train-video", "eval-full")),
    "run_k400_vitl14_8f.sh": ({}, ("train-video", "extract-attr-train", "extract-attr-test", "gen-attributes-train",
                                  "gen-attributes-test", "train-attrs", "eval-full")),
    "run_k400_vitl14_16f.sh": ({}, ("train-video", "eval-full")),
    "run_k400_vitl14-336.sh": ({"FRAMES": "32"}, ("train-video", "eval-full")),
    "run_ucf101.sh": ({"MODEL": "ViT-L-14-336"}, ("train-video", "eval-full")),
    "run_hmdb51.sh": ({}, ("train-video", "eval-full")),
    "run_anet.sh": ({"TRAIN_ATTRS": "0"}, ("train-video", "eval-full")),
    "run_charades.sh": ({"END_TO_END": "0"}, ("extract-train", "extract-test", "train-video", "eval-full")),
    "run_fewshot.sh": ({"DATASET": "hmdb51", "SHOTS": "5"}, ("train-video", "eval-full")),
    "run_fewshot_lists.sh": ({"DATASET": "ucf101", "SHOTS": "16", "VIFI": "vifi"}, ("train-video", "eval-full")),
    "run_zeroshot.sh": ({"DATASET": "ucf101"}, ("eval-zero-shot-half", "eval-full")),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_run_scripts_drive_the_pipeline_with_existing_recipes(tmp_path, script):
    stub = tmp_path / "bike"
    stub.write_text(STUB_BIKE)
    stub.chmod(0o755)
    variables, stages = SCRIPTS[script]
    env = {**_base_env(), "BIKE": str(stub), "TRAIN_LIST": "train.csv", "VAL_LIST": "val.csv",
           "CLASSES": "classes.csv", **variables}
    result = subprocess.run(["bash", str(REPO / "recipes" / script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    headers = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("==> ")]
    assert headers == list(stages)
    commands = [line.split()[2:] for line in result.stdout.splitlines() if line.startswith("    $ ")]
    for args in (a for a in commands if a[0] == "train-video"):  # the script's model and frames are the recipe's
        recipe = build_config(TrainVideoConfig, Path(args[args.index("--recipe") + 1]), {}, stage="train-video")
        assert args[args.index("--model") + 1] == recipe.model
        assert args[args.index("--frames") + 1] == str(recipe.frames)


def test_every_run_script_is_covered():
    standalone = {"run_base2novel.sh"}  # runs its own loop over seeds (its test is below)
    assert set(SCRIPTS) | standalone == {p.name for p in (REPO / "recipes").glob("run_*.sh")}


B2N_STUB = """#!/usr/bin/env bash
stage=$1 out= seed= prev=
for arg in "$@"; do [[ $prev == --out ]] && out=$arg; [[ $prev == --seed ]] && seed=$arg; prev=$arg; done
echo "$*" >> calls.txt
case $stage in
  extract-features) touch "$out" ;;
  train-video) mkdir -p "$out" && touch "$out/last.pt" ;;
  eval) mkdir -p "$out" && s=${out%/eval}; s=${s##*/s}
        printf '{"metrics": {"video": {"base_top1": %s, "novel_top1": %s, "HM": %s}}}' \\
          $((60 + 10 * s)) $((40 + s)) $((50 + 2 * s)) > "$out/metrics.json" ;;
esac
"""


def test_the_base_to_novel_script_trains_each_seed_on_its_list_and_prints_mean_and_std(tmp_path):
    """run_base2novel.sh: one run per seed on fs_base_sN_train's cache with --base-classes, eval base-novel on
    base_val / novel_val, then the mean ± population std of each figure over the seeds' metrics.json."""
    import statistics

    stub = tmp_path / "bike"
    stub.write_text(B2N_STUB)
    stub.chmod(0o755)
    env = {**_base_env(), "BIKE": str(stub), "SPLITS": "splits", "BASE_CLASSES": "base.csv",
           "NOVEL_CLASSES": "novel.csv", "DATA_ROOT": "videos", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "recipes" / "run_base2novel.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    trains = [c for c in calls if c.startswith("train-video")]
    assert [c.split("--features ")[1].split()[0] for c in trains] == [
        f"bike-runs/base2novel/features/fs_base_s{s}_train.h5" for s in (1, 2, 3)]
    assert all("--base-classes base.csv" in c for c in trains)
    evals = [c for c in calls if c.startswith("eval")]
    assert len(evals) == 3 and all("--protocol base-novel" in c and "--novel-features" in c for c in evals)
    for key, values in (("base_top1", [70, 80, 90]), ("novel_top1", [41, 42, 43]), ("HM", [52, 54, 56])):
        line = next(line for line in result.stdout.splitlines() if line.split()[:1] == [key])
        assert f"{statistics.fmean(values):6.2f} ± {statistics.pstdev(values):.2f}" in line
